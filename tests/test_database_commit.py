"""What a write does once it has committed, on SQLite and on a real PostgreSQL: the one
after-commit mechanism (``storage/aftercommit.py``, used by the audit stream and SQLite's wake-ups),
``Database.write`` (one statement, autocommit on PostgreSQL), and the pool's check of connections
that rested (PostgreSQL restarted under a server that was quiet, or busy)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, func, insert, select, update

from signpeer_core.errors import DatabaseUnavailableError
from signpeer_core.storage import Database
from signpeer_core.storage import engine as database_module
from signpeer_core.storage.aftercommit import after_commit
from signpeer_core.testing import wait_until
from signpeer_core.testing.postgres import PostgresServer

metadata = MetaData()
items = Table("commit_test_items", metadata, Column("id", Integer, primary_key=True), Column("name", Text))


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'commit.db'}"
    else:
        url = request.getfixturevalue("postgres").fresh_url()
    db = Database(url)
    metadata.create_all(db.engine)
    yield db
    db.close()


def count(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(items)).scalar_one())


def test_actions_run_once_committed_and_never_for_a_rollback(database: Database) -> None:
    seen: list[tuple[str, int]] = []
    with database.transaction() as conn:
        conn.execute(insert(items), {"id": 1, "name": "a"})
        after_commit(conn, lambda: seen.append(("first", count(database))))  # it sees the committed row
        after_commit(conn, lambda: seen.append(("second", count(database))))
        assert seen == []  # not before the commit
    assert seen == [("first", 1), ("second", 1)]

    with pytest.raises(RuntimeError), database.transaction() as conn:
        conn.execute(insert(items), {"id": 2, "name": "b"})
        after_commit(conn, lambda: seen.append(("rolled back", count(database))))
        raise RuntimeError("the block failed")
    with database.transaction() as conn:  # the next transaction does not run the dropped action
        conn.execute(insert(items), {"id": 3, "name": "c"})
    assert seen == [("first", 1), ("second", 1)] and count(database) == 2


def test_a_failing_action_is_logged_and_the_others_still_run(database: Database,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []

    def broken() -> None:
        raise ValueError("broken action")

    with caplog.at_level(logging.ERROR, logger="signpeer.storage"), database.transaction() as conn:
        conn.execute(insert(items), {"id": 1, "name": "a"})
        after_commit(conn, broken)
        after_commit(conn, lambda: ran.append("after"))
    assert ran == ["after"] and count(database) == 1  # committed, and the caller is not told otherwise
    assert "an action after a database commit failed" in caplog.text and "broken action" in caplog.text


def test_notifications_reach_listeners_after_the_commit_only(database: Database) -> None:
    got: list[tuple[str | None, int]] = []
    heard = threading.Event()

    def listener(payload: str | None) -> None:
        heard.set()  # first: a premature notification must show even while the writer holds SQLite's lock
        got.append((payload, count(database)))

    stop = database.listen("commit-test", listener)
    try:
        assert database.listener_ready(10)
        with pytest.raises(RuntimeError), database.transaction() as conn:
            conn.execute(insert(items), {"id": 1, "name": "rolled back"})
            database.notify("commit-test", "rolled back", conn)
            raise RuntimeError("the block failed")
        with database.transaction() as conn:
            conn.execute(insert(items), {"id": 2, "name": "kept"})
            database.notify("commit-test", "kept", conn)
            assert not heard.wait(0.2), "a listener was told before the commit"
        wait_until(lambda: got, timeout=10, what="the notification of the committed transaction")
        assert got == [("kept", 1)]  # the rolled-back one never went out; the listener found the row
    finally:
        stop()


def test_write_runs_one_statement_and_returns_its_rows(database: Database) -> None:
    done = database.write(insert(items).returning(items.c.id, items.c.name), {"id": 1, "name": "a"})
    assert [tuple(r) for r in done.rows] == [(1, "a")] and done.rowcount == 1
    changed = database.write(update(items).where(items.c.name == "nobody").values(name="x"))
    assert changed.rows == [] and changed.rowcount == 0
    assert count(database) == 1
    with pytest.raises(Exception, match="(?i)unique|duplicate"):  # all or nothing: the row is not written twice
        database.write(insert(items), {"id": 1, "name": "again"})
    assert count(database) == 1


def test_write_each_runs_independent_statements_in_order(database: Database) -> None:
    first, second = database.write_each([
        (insert(items).returning(items.c.id), {"id": 1, "name": "a"}),
        (update(items).where(items.c.id == 1).values(name="b").returning(items.c.name), None)])
    assert [tuple(r) for r in first.rows] == [(1,)] and [tuple(r) for r in second.rows] == [("b",)]
    assert count(database) == 1


# -- PostgreSQL restarted under a running process (a server of its own: it is restarted) ---------

@pytest.fixture
def restartable() -> Iterator[tuple[PostgresServer, Database]]:
    server = PostgresServer().start()
    db = Database(server.fresh_url())
    try:
        metadata.create_all(db.engine)
        yield server, db
    finally:
        db.close()
        server.close()


def _fill_pool(db: Database, n: int = 3) -> None:
    """``n`` connections in the pool (taken at once, then given back)."""
    holding = [db.engine.connect() for _ in range(n)]
    for conn in holding:
        conn.exec_driver_sql("SELECT 1")
        conn.close()


def test_a_connection_that_rested_is_checked_after_a_restart(restartable: tuple[PostgresServer, Database],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    server, db = restartable
    _fill_pool(db)
    server.restart()
    monkeypatch.setattr(database_module, "PING_AFTER_IDLE_S", 0.0)  # every pooled connection "rested"
    # Each statement gets a checked connection: no failure at all.
    db.write(insert(items), {"id": 1, "name": "after the restart"})
    with db.transaction() as conn:
        conn.execute(insert(items), {"id": 2, "name": "in a transaction"})
    assert count(db) == 2


def test_a_busy_connection_lost_in_a_restart_fails_once_and_the_pool_is_renewed(
        restartable: tuple[PostgresServer, Database], monkeypatch: pytest.MonkeyPatch) -> None:
    server, db = restartable
    _fill_pool(db)
    server.restart()
    monkeypatch.setattr(database_module, "PING_AFTER_IDLE_S", 3600.0)  # in steady use: never checked
    with pytest.raises(DatabaseUnavailableError, match="cannot be reached"):
        db.write(insert(items), {"id": 1, "name": "lost"})
    # The dead connections went with the first failure: the next statements work.
    db.write(insert(items), {"id": 2, "name": "kept"})
    with db.transaction() as conn:
        conn.execute(insert(items), {"id": 3, "name": "kept too"})
    assert count(db) == 2

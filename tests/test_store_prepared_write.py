"""Prepared writes (the hot writes' fast path): what ``Database.write`` gives and commits, compiled
once and run on the driver's cursor; a failed one rolled back; on SQLite and on PostgreSQL
(``SIGNPEER_TEST_DATABASE_URL``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Column, Float, Integer, MetaData, Table, Text, bindparam, event, insert, select, update
from sqlalchemy.exc import IntegrityError

from signpeer_core.storage.database import Database
from signpeer_core.testing import wait_until

metadata = MetaData()
items = Table("prepared_write_items", metadata, Column("id", Text, primary_key=True), Column("n", Integer),
              Column("at", Float), Column("note", Text))
INSERT = insert(items).values(id=bindparam("id"), n=bindparam("n"), at=bindparam("at"), note=None)
BUMP = (update(items).where(items.c.id == bindparam("rid"), items.c.n < bindparam("below"))
        .values(n=items.c.n + 1, note=bindparam("note")).returning(items.c.id, items.c.n, items.c.at, items.c.note))


@pytest.fixture
def database(services: Any) -> Iterator[Database]:
    db: Database = services.store.database
    metadata.create_all(db.engine)
    yield db
    metadata.drop_all(db.engine)


def rows(db: Database) -> list[tuple[Any, ...]]:
    with db.read() as conn:
        return [tuple(r) for r in conn.execute(select(items).order_by(items.c.id))]


def test_prepared_write_commits_and_returns_what_write_does(database: Database) -> None:
    prepared_insert, prepared_bump = database.prepare_write(INSERT), database.prepare_write(BUMP)
    assert prepared_insert.keys == () and prepared_bump.keys == ("id", "n", "at", "note")
    assert prepared_insert.run({"id": "a", "n": 1, "at": 1.5}) == ([], 1)
    database.write(INSERT, {"id": "b", "n": 1, "at": 2.5})
    assert rows(database) == [("a", 1, 1.5, None), ("b", 1, 2.5, None)]  # committed: seen by another read
    returned, count = prepared_bump.run({"rid": "a", "below": 5, "note": "bumped"})
    written = database.write(BUMP, {"rid": "b", "below": 5, "note": "bumped"})
    assert (returned, count) == ([("a", 2, 1.5, "bumped")], 1)
    assert [tuple(r) for r in written.rows] == [("b", 2, 2.5, "bumped")] and written.rowcount == 1
    assert prepared_bump.run({"rid": "a", "below": 2, "note": "x"}) == ([], 0)  # no row matched
    assert rows(database) == [("a", 2, 1.5, "bumped"), ("b", 2, 2.5, "bumped")]


def test_a_failed_prepared_write_is_rolled_back_and_the_next_one_works(database: Database) -> None:
    prepared = database.prepare_write(INSERT)
    prepared.run({"id": "a", "n": 1, "at": 1.0})
    with pytest.raises(IntegrityError) as failed:  # SQLAlchemy's, as write() raises it; the driver's is .orig
        prepared.run({"id": "a", "n": 2, "at": 2.0})
    assert failed.value.statement == prepared.sql and "unique" in str(failed.value.orig).lower(), failed.value
    prepared.run({"id": "b", "n": 3, "at": 3.0})
    with database.transaction() as conn:  # the connection is not left in a transaction
        conn.execute(INSERT, {"id": "c", "n": 4, "at": 4.0})
    assert [r[0] for r in rows(database)] == ["a", "b", "c"]


def test_a_failed_prepared_read_raises_sqlalchemys_error_and_the_next_one_works(database: Database) -> None:
    """A driver's error of a prepared read (on the driver's cursor) reaches its caller as
    SQLAlchemy's class for it, as ``Connection.execute`` raises it, counted as a failed read; the
    connection is not left broken."""
    from sqlalchemy.exc import DBAPIError

    from signpeer_core.storage.database import _errors

    other = Table("prepared_read_gone", MetaData(), Column("id", Text, primary_key=True))
    other.create(database.engine)
    read = database.prepare(select(other.c.id).where(other.c.id == bindparam("id")))
    assert read.all({"id": "x"}) == []
    other.drop(database.engine)
    failures = _errors.labels("read")._value.get()
    with pytest.raises(DBAPIError) as failed:
        read.all({"id": "x"})
    assert failed.value.statement == read.sql and "prepared_read_gone" in str(failed.value.orig), failed.value
    assert type(failed.value.orig).__module__.split(".")[0] in ("sqlite3", "psycopg")
    assert _errors.labels("read")._value.get() == failures + 1
    database.prepare_write(INSERT).run({"id": "a", "n": 1, "at": 1.0})
    assert [r[0] for r in rows(database)] == ["a"]


def test_statement_listeners_see_prepared_writes(database: Database) -> None:
    seen: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    prepared = database.prepare_write(INSERT)
    event.listen(database.engine, "before_cursor_execute", listener)
    try:
        prepared.run({"id": "a", "n": 1, "at": 1.0})
    finally:
        event.remove(database.engine, "before_cursor_execute", listener)
    assert seen == [prepared.sql]


def test_a_prepared_write_inside_a_transaction_of_the_same_thread_is_refused(database: Database) -> None:
    if database.dialect != "sqlite":
        pytest.skip("SQLite's one connection per process: PostgreSQL's write takes another pooled connection")
    prepared = database.prepare_write(INSERT)
    with pytest.raises(RuntimeError, match="already open"), database.transaction():
        prepared.run({"id": "a", "n": 1, "at": 1.0})
    assert rows(database) == []


def test_a_prepared_write_refused_by_a_read_only_postgresql_says_so_as_write_does(database: Database) -> None:
    """psycopg's own error from the driver's cursor is translated as ``write()`` translates
    SQLAlchemy's (a standby after a failover: "read-only transaction"), and counted."""
    if database.dialect != "postgresql":
        pytest.skip("PostgreSQL's read-only transactions")
    from signpeer_core.errors import DatabaseUnavailableError

    engine = database.engine  # its pool serves write() and the prepared writes' autocommit connections

    def read_only(dbapi_connection: Any, record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET default_transaction_read_only = on")
        dbapi_connection.commit()

    event.listen(engine, "connect", read_only)
    engine.dispose()
    try:
        with pytest.raises(DatabaseUnavailableError, match="not writable") as by_write:
            database.write(INSERT, {"id": "w", "n": 1, "at": 1.0})
        with pytest.raises(DatabaseUnavailableError, match="not writable") as by_prepared:
            database.prepare_write(INSERT).run({"id": "p", "n": 1, "at": 1.0})
        assert str(by_prepared.value) == str(by_write.value)
    finally:
        event.remove(engine, "connect", read_only)
        engine.dispose()
    database.prepare_write(INSERT).run({"id": "a", "n": 1, "at": 1.0})  # writable again on new connections
    assert [r[0] for r in rows(database)] == ["a"]


def test_run_in_writes_with_the_callers_transaction_and_goes_with_its_rollback(database: Database) -> None:
    """``run_in``: the statement (or one per parameter set) in a transaction of the caller, seen by
    the statement listeners, committed with it and rolled back with it."""
    prepared, note = database.prepare_write(INSERT), database.prepare_write(
        update(items).where(items.c.n >= bindparam("from_n")).values(note=bindparam("note")))
    seen: list[tuple[str, bool]] = []

    def listener(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        seen.append((statement, many))

    event.listen(database.engine, "before_cursor_execute", listener)
    try:
        with database.transaction() as conn:
            assert prepared.run_in(conn, [{"id": "a", "n": 1, "at": 1.0}, {"id": "b", "n": 2, "at": 2.0}]) == ([], 2)
            assert note.run_in(conn, {"from_n": 2, "note": "two"}) == ([], 1)
            assert database.prepare_write(BUMP).run_in(conn, {"rid": "a", "below": 9, "note": "one"}) == \
                ([("a", 2, 1.0, "one")], 1)  # RETURNING, as run() gives it
            conn.execute(INSERT, {"id": "c", "n": 3, "at": 3.0})  # SQLAlchemy's statements in the same transaction
    finally:
        event.remove(database.engine, "before_cursor_execute", listener)
    assert [many for statement, many in seen if "prepared_write_items" in statement] == [True, False, False, False]
    assert rows(database) == [("a", 2, 1.0, "one"), ("b", 2, 2.0, "two"), ("c", 3, 3.0, None)]
    with pytest.raises(RuntimeError), database.transaction() as conn:
        prepared.run_in(conn, {"id": "d", "n": 4, "at": 4.0})
        raise RuntimeError("the caller's block fails after the write")
    with pytest.raises(IntegrityError) as failed, database.transaction() as conn:
        prepared.run_in(conn, {"id": "e", "n": 5, "at": 5.0})
        prepared.run_in(conn, {"id": "a", "n": 6, "at": 6.0})  # taken: the error ends the transaction
    # SQLAlchemy's IntegrityError, as conn.execute() raises it, on SQLite and PostgreSQL alike; the
    # driver's own error (sqlite3.IntegrityError, psycopg's UniqueViolation) is its .orig
    assert failed.value.statement == prepared.sql and "unique" in str(failed.value.orig).lower(), failed.value
    assert [r[0] for r in rows(database)] == ["a", "b", "c"]  # neither "d" nor "e"
    with pytest.raises(ValueError), database.transaction() as conn:  # RETURNING with executemany: refused
        database.prepare_write(BUMP).run_in(conn, [{"rid": "a", "below": 9, "note": "x"}])


def test_a_notifying_prepared_write_tells_the_listeners_once_it_wrote(database: Database) -> None:
    """``run(..., notify=(channel, payload))``: the listeners hear it after the commit and only if
    a row was written; on PostgreSQL the write and ``pg_notify`` are one statement (one round trip)."""
    heard: list[tuple[str | None, list[tuple[Any, ...]]]] = []
    seen: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.get_ident() == writer:  # not the listener thread's reads
            seen.append(statement)

    writer = threading.get_ident()
    stop = database.listen("prepared-notify", lambda payload: heard.append((payload, rows(database))))
    try:
        assert database.listener_ready(10)
        prepared_insert, prepared_bump = database.prepare_write(INSERT), database.prepare_write(BUMP)
        event.listen(database.engine, "before_cursor_execute", listener)
        try:
            assert prepared_insert.run({"id": "a", "n": 1, "at": 1.5}, notify=("prepared-notify", "a")) == ([], 1)
            assert prepared_bump.run({"rid": "a", "below": 5, "note": "x"}, notify=("prepared-notify", "bumped")) \
                == ([("a", 2, 1.5, "x")], 1)
            assert prepared_bump.run({"rid": "a", "below": 2, "note": "y"}, notify=("prepared-notify", "no row")) \
                == ([], 0)
        finally:
            event.remove(database.engine, "before_cursor_execute", listener)
        database.notify("prepared-notify", "last")
        wait_until(lambda: [p for p, _ in heard][-1:] == ["last"], timeout=10, what="the last notification")
    finally:
        stop()
    # In order, none for the write that changed nothing, each after its commit: the listener (reading
    # while the test goes on) finds the inserted row, then the bumped one.
    assert [payload for payload, _ in heard] == ["a", "bumped", "last"]
    assert [row[0] for row in heard[0][1]] == ["a"] and heard[1][1] == [("a", 2, 1.5, "x")]
    assert len(seen) == 3, seen  # one statement per write: on PostgreSQL the notification rides on it
    if database.dialect == "postgresql":
        assert all("pg_notify" in statement for statement in seen), seen

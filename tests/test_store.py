"""The store: all-or-nothing writes with their audit records, publishing in the same transaction,
and the reload counter shared by every process on the same database."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from signpeer_core.errors import ConfigurationError
from signpeer_core.storage import Admin, AuditEvent, Store, open_store
from signpeer_core.storage.engine import create_engine


def store_at(path: Path) -> Store:
    return open_store(f"sqlite:///{path}")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = store_at(tmp_path / "db.sqlite")
    yield opened
    opened.close()


def test_fresh_database_is_at_the_newest_core_revision(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "db.sqlite"  # the directory is made
    store_at(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version_core").fetchall() == [("core_0007",)]
        # A signpeer from before per-owner migrations refuses the database ("newer than it understands").
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("5",)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    store = store_at(path)
    assert store.config_generation() == 0 and store.activation_generation() == 0
    store.close()


def test_sqlite_connections_keep_the_settings(store: Store) -> None:
    with store.database.read() as conn:
        pragmas = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                   for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")}
    assert pragmas == {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 30000, "foreign_keys": 1}


def test_connections_opening_a_fresh_database_at_once_all_open(tmp_path: Path) -> None:
    # Two connections switching a fresh file to WAL at the same moment: SQLite answers one of them
    # "database is locked" without waiting (it once failed a two-process start in CI). Threads
    # race as processes do (SQLite's locks are per file, whichever connection holds them); without
    # the retry, about four rounds in ten failed here.
    errors: list[str] = []
    for round_ in range(100):
        path = tmp_path / f"db{round_}.sqlite"
        engines = [create_engine(f"sqlite:///{path}") for _ in range(2)]
        start = threading.Barrier(2)

        def connect(engine: Engine, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                with engine.connect() as conn:
                    assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            except Exception as exc:  # collected: an exception in a thread would not fail the test
                errors.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=connect, args=(engine,)) for engine in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for engine in engines:
            engine.dispose()
    assert errors == []


def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    store_at(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version_core SET version_num='core_9999'")
    with pytest.raises(ConfigurationError, match="schema version core_9999 of 'core', newer than this signpeer "
                                                 r"understands \(core_0007\); upgrade signpeer"):
        store_at(path)


def test_keys_upper_case_and_audit_in_same_transaction(store: Store) -> None:
    admin = Admin("tester")
    store.update_worker(3, {"name": "Signer", "defaultKey": "k"},
                        audit=[AuditEvent("SET_WORKER_CONFIG", "WORKER_CONFIG", admin, 3, {"added": "NAME"})])
    assert store.worker_properties(3) == {"NAME": "Signer", "DEFAULTKEY": "k"}
    events = store.audit_events(worker_id=3)
    assert [e.event for e in events] == ["SET_WORKER_CONFIG"]
    assert events[0].admin.name == "tester" and events[0].details == {"added": "NAME"}


def test_failed_write_changes_nothing_and_logs_nothing(store: Store) -> None:
    store.update_worker(1, {"NAME": "A"})

    class Boom:
        def __str__(self) -> str:
            raise RuntimeError("value cannot be stored")

    with pytest.raises(RuntimeError):
        store.update_worker(1, {"NAME": "B", "X": Boom()},
                            audit=[AuditEvent("SET_WORKER_CONFIG", "WORKER_CONFIG", Admin("t"), 1)])
    assert store.worker_properties(1) == {"NAME": "A"}
    assert store.audit_events() == []


def test_global_properties_and_removal(store: Store) -> None:
    store.update_global({"glob.peers_incoming_enabled": "true"})
    assert store.global_properties() == {"GLOB.PEERS_INCOMING_ENABLED": "true"}
    store.update_global(remove=["glob.peers_incoming_enabled"])
    assert store.global_properties() == {}


def test_workers_ids_and_removal_with_the_keystore(store: Store) -> None:
    assert store.next_worker_id() == 1
    store.update_worker(2, {"NAME": "Two"})
    store.update_worker(5, {"NAME": "Five", "X": "1"})
    store.put_keystore(5, b"\x00p12")
    assert store.worker_ids() == [2, 5] and store.next_worker_id() == 6
    assert store.all_worker_properties() == {2: {"NAME": "Two"}, 5: {"NAME": "Five", "X": "1"}}
    assert store.keystore(5) == b"\x00p12" and store.keystore(2) is None
    store.remove_worker(5, audit=[AuditEvent("REMOVE_WORKER", "WORKER_CONFIG", Admin("t"), 5)])
    assert store.worker_ids() == [2] and store.keystore(5) is None
    assert [e.event for e in store.audit_events(worker_id=5)] == ["REMOVE_WORKER"]


def test_apply_changes_publishes_in_the_same_transaction(store: Store) -> None:
    store.update_worker(1, {"NAME": "A", "OLD": "x"})
    generation = store.apply_changes(
        workers={1: ({"NAME": "B"}, ["old"]), 2: ({"NAME": "C"}, [])}, global_set={"glob.x": "1"},
        audit=[AuditEvent("SET_WORKER_CONFIG", "WORKER_CONFIG", Admin("t"), 1)], bump_generation=True)
    assert generation == 1 == store.config_generation()
    assert store.all_worker_properties() == {1: {"NAME": "B"}, 2: {"NAME": "C"}}
    assert store.global_properties() == {"GLOB.X": "1"}
    # Without bump_generation nothing is published.
    assert store.apply_changes(global_set={"glob.y": "2"}) is None
    assert store.config_generation() == 1


def test_apply_changes_that_fails_neither_changes_audits_nor_publishes(store: Store) -> None:
    store.update_worker(1, {"NAME": "A"})

    class Boom:
        def __str__(self) -> str:
            raise RuntimeError("value cannot be stored")

    with pytest.raises(RuntimeError):
        store.apply_changes(workers={1: ({"NAME": "B"}, []), 2: ({"NAME": "C", "X": Boom()}, [])},
                            audit=[AuditEvent("SET_WORKER_CONFIG", "WORKER_CONFIG", Admin("t"), 1)],
                            bump_generation=True)
    assert store.all_worker_properties() == {1: {"NAME": "A"}}
    assert store.audit_events() == []
    assert store.config_generation() == 0


def test_generation_is_seen_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    store = store_at(path)
    code = (f"from signpeer_core.storage import open_store; s = open_store('sqlite:///' + {str(path)!r}); "
            "print(s.bump_config_generation())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
    assert store.config_generation() == 1
    store.close()


def test_token_activations_per_node(store: Store) -> None:
    assert store.set_token_activation(1, "node1", True, b"sealed") == 1
    assert store.set_token_activation(2, "node2", False, None) == 2
    assert store.set_token_activation(1, "node1", False, None) == 3
    assert store.token_activations("node1") == {1: (False, None)}
    assert store.token_activations("node2") == {2: (False, None)}
    store.clear_token_activations("node1")
    assert store.token_activations("node1") == {} and store.activation_generation() == 3


def test_audit_filters(store: Store) -> None:
    for i, event in enumerate(["KEYGEN", "GENCSR", "KEYGEN"]):
        store.audit(AuditEvent(event, "KEY_MANAGEMENT", Admin(f"admin{i}"), worker_id=i, time=1000.0 + i))
    assert [e.worker_id for e in store.audit_events(event="keygen")] == [2, 0]
    assert [e.worker_id for e in store.audit_events(since=1001)] == [2, 1]
    assert [e.worker_id for e in store.audit_events(until=1001)] == [1, 0]
    assert [e.worker_id for e in store.audit_events(admin="admin1")] == [1]
    assert [e.worker_id for e in store.audit_events(limit=1)] == [2]


@pytest.mark.parametrize("url", ["mysql://x", "nonsense"])
def test_unsupported_database_url(url: str) -> None:
    with pytest.raises(ConfigurationError, match="unsupported database URL"):
        open_store(url)


def test_postgresql_that_is_down_is_a_clear_503() -> None:
    from signpeer_core.storage.database import DatabaseUnavailableError
    from signpeer_core.testing.postgres import free_port

    url = f"postgresql://signpeer:secret@127.0.0.1:{free_port()}/signpeer"
    with pytest.raises(DatabaseUnavailableError) as caught:
        open_store(url)
    assert caught.value.status == 503
    assert "cannot be reached" in caught.value.message and "database_url" in caught.value.message
    assert "secret" not in caught.value.message  # never the password


def test_postgresql_url_without_database_or_with_another_driver_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="names no database"):
        open_store("postgresql://signpeer@127.0.0.1:5432")
    with pytest.raises(ConfigurationError, match="psycopg 3"):
        open_store("postgresql+asyncpg://signpeer@127.0.0.1/x")

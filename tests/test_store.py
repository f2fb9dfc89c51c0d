"""The SQLite store: migrations, all-or-nothing writes with their audit records, and the
reload counter shared by every process on the same database."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from signpeer_core.errors import ConfigurationError
from signpeer_core.store import MIGRATIONS, Admin, AuditEvent, SQLiteStore, open_store


def test_fresh_database_is_at_latest_schema(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    assert store.schema_version() == MIGRATIONS[-1][0]
    assert store.config_generation() == 0


def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigurationError, match="newer than this signpeer"):
        SQLiteStore(path)


def test_keys_upper_case_and_audit_in_same_transaction(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    admin = Admin("tester")
    store.update_worker(3, {"name": "Signer", "defaultKey": "k"},
                        audit=[AuditEvent("SET_WORKER_CONFIG", "WORKER_CONFIG", admin, 3, {"added": "NAME"})])
    assert store.worker_properties(3) == {"NAME": "Signer", "DEFAULTKEY": "k"}
    events = store.audit_events(worker_id=3)
    assert [e.event for e in events] == ["SET_WORKER_CONFIG"]
    assert events[0].admin.name == "tester" and events[0].details == {"added": "NAME"}


def test_failed_write_changes_nothing_and_logs_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    store.update_worker(1, {"NAME": "A"})

    class Boom:
        def __str__(self) -> str:
            raise RuntimeError("value cannot be stored")

    with pytest.raises(RuntimeError):
        store.update_worker(1, {"NAME": "B", "X": Boom()},  # type: ignore[dict-item]
                            audit=[AuditEvent("SET_WORKER_CONFIG", "WORKER_CONFIG", Admin("t"), 1)])
    assert store.worker_properties(1) == {"NAME": "A"}
    assert store.audit_events() == []


def test_global_properties_and_removal(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    store.update_global({"glob.peers_incoming_enabled": "true"})
    assert store.global_properties() == {"GLOB.PEERS_INCOMING_ENABLED": "true"}
    store.update_global(remove=["glob.peers_incoming_enabled"])
    assert store.global_properties() == {}


def test_generation_is_seen_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    store = SQLiteStore(path)
    code = (f"from signpeer_core.store import SQLiteStore; s = SQLiteStore({str(path)!r}); "
            "print(s.bump_config_generation())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
    assert store.config_generation() == 1


def test_audit_filters(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    for i, event in enumerate(["KEYGEN", "GENCSR", "KEYGEN"]):
        store.audit(AuditEvent(event, "KEY_MANAGEMENT", Admin(f"admin{i}"), worker_id=i, time=1000.0 + i))
    assert [e.worker_id for e in store.audit_events(event="keygen")] == [2, 0]
    assert [e.worker_id for e in store.audit_events(since=1001)] == [2, 1]
    assert [e.worker_id for e in store.audit_events(admin="admin1")] == [1]


def test_unsupported_database_url() -> None:
    with pytest.raises(ConfigurationError, match="unsupported database URL"):
        open_store("mysql://x")

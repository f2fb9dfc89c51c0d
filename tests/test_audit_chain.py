"""The audit log's HMAC chain: changes, insertions, deletions, back-dating and truncation are
found by ``signpeer auditlog --verify``, which names the first broken record; appends from several
processes at once extend one chain (issue 11, item 22)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from signpeer_core.storage import Admin, AuditEvent, open_store


@pytest.fixture
def logged(home: Path, signpeer: Any) -> Path:
    """A data directory with a few audit records (ids 2.. after the fixture's own)."""
    for i in range(5):
        code, _, err = signpeer.in_process("setproperty", "global", f"GLOB.PROP{i}", str(i))
        assert code == 0, err
    return home / "signpeer.db"


def edit(db: Path, sql: str, *params: object) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(sql, params)


def ids(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM audit_log ORDER BY id")]


def test_an_untouched_log_verifies(logged: Path, signpeer: Any) -> None:
    code, out, err = signpeer.in_process("auditlog", "--verify")
    assert code == 0, err
    assert f"Audit log intact: {len(ids(logged))} records verified." in out


@pytest.mark.parametrize("tamper, broken", [
    (lambda db, i: edit(db, "UPDATE audit_log SET details = '{}' WHERE id = ?", i[3]), 3),
    (lambda db, i: edit(db, "UPDATE audit_log SET admin = 'CN=root-admin' WHERE id = ?", i[2]), 2),
    (lambda db, i: edit(db, "UPDATE audit_log SET time = time - 86400 WHERE id = ?", i[4]), 4),   # back-dated
    (lambda db, i: edit(db, "DELETE FROM audit_log WHERE id = ?", i[2]), 3),                      # removed
    (lambda db, i: edit(db, "INSERT INTO audit_log (id, time, event, module, outcome, admin, details, mac) "
                            "SELECT id + 1000, time, event, module, outcome, admin, details, mac FROM audit_log "
                            "WHERE id = ?", i[1]), "last+1"),                                       # copied in
])
def test_tampering_is_found_and_the_first_broken_record_named(logged: Path, signpeer: Any,
                                                              tamper: Callable[[Path, list[int]], None],
                                                              broken: int | str) -> None:
    before = ids(logged)
    tamper(logged, before)
    expected = before[1] + 1000 if broken == "last+1" else before[int(broken)]
    code, out, err = signpeer.in_process("auditlog", "--verify")
    assert code != 0 and out == ""
    assert f"the audit log is broken at record {expected}:" in err


def test_removing_the_newest_records_is_found(logged: Path, signpeer: Any) -> None:
    last = ids(logged)[-1]
    edit(logged, "DELETE FROM audit_log WHERE id >= ?", last - 1)
    code, _, err = signpeer.in_process("auditlog", "--verify")
    assert code != 0 and f"records after {last - 2} were removed" in err
    # Pointing the head at the new last record needs the key: a copied-over head does not fit.
    edit(logged, "UPDATE meta SET value = (SELECT id || ' ' || mac || ' ' || 'x' FROM audit_log "
                 "ORDER BY id DESC LIMIT 1) WHERE key = 'audit.head'")
    code, _, err = signpeer.in_process("auditlog", "--verify")
    assert code != 0 and "head" in err


def test_appends_from_several_processes_form_one_chain(home: Path, signpeer: Any) -> None:
    start = time.time() + 2
    script = textwrap.dedent(f"""
        import sys, time
        from signpeer_core.storage import Admin, AuditEvent, open_store
        store = open_store({f"sqlite:///{home / 'signpeer.db'}"!r})
        while time.time() < {start}:
            time.sleep(0.001)
        for i in range(25):
            store.audit(AuditEvent("TEST_EVENT", "TEST", Admin(f"writer {{sys.argv[1]}}"), details={{"i": str(i)}}))
        store.close()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n)], stderr=subprocess.PIPE) for n in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    code, out, err = signpeer.in_process("auditlog", "--verify")
    assert code == 0, err
    store = open_store(f"sqlite:///{home / 'signpeer.db'}")
    try:
        assert len(store.audit_events(event="TEST_EVENT", limit=1000)) == 100
    finally:
        store.close()


def test_records_are_listed_by_time(home: Path) -> None:
    store = open_store(f"sqlite:///{home / 'signpeer.db'}")
    try:
        now = time.time()
        store.audit(AuditEvent("LATE_WRITTEN", "TEST", Admin("order-test"), time=now - 3600))
        store.audit(AuditEvent("NEWEST", "TEST", Admin("order-test"), time=now))
        store.audit(AuditEvent("OLDEST", "TEST", Admin("order-test"), time=now - 7200))
        names = [e.event for e in store.audit_events(admin="order-test")]
        assert names == ["NEWEST", "LATE_WRITTEN", "OLDEST"]
        assert store.verify_audit_log().intact
    finally:
        store.close()


def test_records_written_before_the_chain_are_chained_when_the_key_is_set_up(home: Path, signpeer: Any) -> None:
    db = home / "signpeer.db"
    edit(db, "UPDATE audit_log SET mac = NULL")
    edit(db, "DELETE FROM meta WHERE key IN ('audit.head', 'protection.key_check')")
    (home / "signpeer.key").unlink()
    code, out, err = signpeer.in_process("auditlog", "--verify")
    assert code == 0 and "records verified" in out, err


def test_a_row_written_past_the_chain_is_reported_and_does_not_block_later_changes(logged: Path,
                                                                                    signpeer: Any) -> None:
    edit(logged, "INSERT INTO audit_log (time, event, module, outcome, admin, details) "
                 "VALUES (0, 'FORGED', 'X', 'SUCCESS', 'CN=root-admin', '{}')")
    forged = ids(logged)[-1]
    code, _, err = signpeer.in_process("setproperty", "global", "GLOB.AFTER", "1")
    assert code == 0, err
    code, _, err = signpeer.in_process("auditlog", "--verify")
    assert code != 0 and f"broken at record {forged}:" in err

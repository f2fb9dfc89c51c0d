"""The audit log's HMAC chain: changes, insertions, deletions, back-dating and truncation are
found by ``signpeer auditlog --verify``, which names the first broken record; appends from several
processes at once extend one chain (issue 11, item 22)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from signpeer_core.storage import Admin, AuditEvent
from signpeer_core.testing import open_store_of


@pytest.fixture
def logged(home: Path, signpeer: Any) -> Path:
    """A data directory with a few audit records (ids 2.. after the fixture's own)."""
    for i in range(5):
        code, _, err = signpeer.in_process("setproperty", "global", f"GLOB.PROP{i}", str(i))
        assert code == 0, err
    return home


def edit(home: Path, sql: str, **params: object) -> None:
    """What someone with write access to the database (SQLite or PostgreSQL) but not the key does."""
    run_sql(home, sql, **params)


def ids(home: Path) -> list[int]:
    return [r[0] for r in run_sql(home, "SELECT id FROM audit_log ORDER BY id")]


def test_an_untouched_log_verifies(logged: Path, signpeer: Any) -> None:
    code, out, err = signpeer.in_process("auditlog", "--verify")
    assert code == 0, err
    assert f"Audit log intact: {len(ids(logged))} records verified." in out


@pytest.mark.parametrize("tamper, broken", [
    (lambda db, i: edit(db, "UPDATE audit_log SET details = '{}' WHERE id = :i", i=i[3]), 3),
    (lambda db, i: edit(db, "UPDATE audit_log SET admin = 'CN=root-admin' WHERE id = :i", i=i[2]), 2),
    (lambda db, i: edit(db, "UPDATE audit_log SET time = time - 86400 WHERE id = :i", i=i[4]), 4),  # back-dated
    (lambda db, i: edit(db, "DELETE FROM audit_log WHERE id = :i", i=i[2]), 3),                     # removed
    (lambda db, i: edit(db, "INSERT INTO audit_log (id, time, event, module, outcome, admin, details, node, mac) "
                            "SELECT id + 1000, time, event, module, outcome, admin, details, node, mac "
                            "FROM audit_log WHERE id = :i", i=i[1]), "last+1"),                     # copied in
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
    edit(logged, "DELETE FROM audit_log WHERE id >= :i", i=last - 1)
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
        from pathlib import Path
        from signpeer_core.storage import Admin, AuditEvent
        from signpeer_core.testing import open_store_of
        store = open_store_of(Path({str(home)!r}))
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
    store = open_store_of(home)
    try:
        assert len(store.audit_events(event="TEST_EVENT", limit=1000)) == 100
    finally:
        store.close()


def test_records_are_listed_by_time(home: Path) -> None:
    store = open_store_of(home)
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
    edit(home, "UPDATE audit_log SET mac = NULL")
    edit(home, "DELETE FROM meta WHERE key IN ('audit.head', 'protection.key_check')")
    (home / "signpeer.key").unlink(missing_ok=True)  # a PostgreSQL test run gives its one key (SIGNPEER_KEY)
    code, out, err = signpeer.in_process("auditlog", "--verify")
    assert code == 0 and "records verified" in out, err


def test_a_row_written_past_the_chain_is_reported_and_does_not_block_later_changes(logged: Path,
                                                                                    signpeer: Any) -> None:
    edit(logged, "INSERT INTO audit_log (id, time, event, module, outcome, admin, details) "
                 "SELECT max(id) + 1, 0, 'FORGED', 'X', 'SUCCESS', 'CN=root-admin', '{}' FROM audit_log")
    forged = ids(logged)[-1]
    code, _, err = signpeer.in_process("setproperty", "global", "GLOB.AFTER", "1")
    assert code == 0, err
    code, _, err = signpeer.in_process("auditlog", "--verify")
    assert code != 0 and f"broken at record {forged}:" in err


# -- the node of each record (issue 10) ---------------------------------------------------------

def run_sql(home: Path, statement: str, **params: object) -> list[Any]:
    """One statement on the data directory's database, SQLite or PostgreSQL, without migrating it."""
    from sqlalchemy import text

    from signpeer_core.settings import load_settings
    from signpeer_core.storage.database import Database

    database = Database(load_settings(home).database)
    try:
        with database.transaction() as conn:
            result = conn.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        database.close()


def test_each_record_names_the_node_that_wrote_it(home: Path, signpeer: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNPEER_NODE_ID", "node-a")
    assert signpeer.in_process("setproperty", "global", "GLOB.FROM_A", "1").code == 0
    monkeypatch.setenv("SIGNPEER_NODE_ID", "node-b")
    assert signpeer.in_process("setproperty", "global", "GLOB.FROM_B", "1").code == 0
    code, out, err = signpeer.in_process("auditlog", "--json", "--event", "SET_GLOBAL_PROPERTY")
    assert code == 0, err
    nodes = {r["details"]["GLOBALCONFIG_PROPERTY"]: r["node"] for r in json.loads(out)
             if r["details"].get("GLOBALCONFIG_PROPERTY", "").startswith("GLOB.FROM_")}
    assert nodes == {"GLOB.FROM_A": "node-a", "GLOB.FROM_B": "node-b"}
    code, out, err = signpeer.in_process("auditlog", "--node", "node-a")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1 and "GLOB.FROM_A" in lines[0] and "; NODEID: node-a;" in lines[0], out
    # The node is sealed into the record's MAC: moving a record to another node, or taking its
    # node away (making it look like a record from before nodes were recorded), breaks the chain.
    (rid,) = run_sql(home, "SELECT id FROM audit_log WHERE node = 'node-a'")[0]
    assert signpeer.in_process("auditlog", "--verify").code == 0
    run_sql(home, "UPDATE audit_log SET node = 'node-b' WHERE id = :rid", rid=rid)
    code, _, err = signpeer.in_process("auditlog", "--verify")
    assert code != 0 and f"broken at record {rid}:" in err
    run_sql(home, "UPDATE audit_log SET node = NULL WHERE id = :rid", rid=rid)
    code, _, err = signpeer.in_process("auditlog", "--verify")
    assert code != 0 and f"broken at record {rid}:" in err


def _old_mac(key: bytes, previous: str, row: Any) -> str:
    """A record's MAC as signpeer computed it before core_0007 (no node), written out here so that
    the test pins the old form rather than reusing the code under test."""
    import hashlib
    import hmac

    content = json.dumps([row.id, repr(float(row.time)), row.event, row.module, row.outcome, row.admin, row.issuer,
                          row.serial, row.worker_id, row.details], separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, previous.encode() + b"|" + content.encode(), hashlib.sha256).hexdigest()


def test_a_log_chained_before_nodes_were_recorded_still_verifies(home: Path, signpeer: Any,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        assert signpeer.in_process("setproperty", "global", f"GLOB.OLD{i}", str(i)).code == 0
    store = open_store_of(home)
    key = store.box.audit_key
    store.close()
    # The database as core_0005 left it: no node column, every record chained in the old form.
    run_sql(home, "ALTER TABLE audit_log DROP COLUMN node")
    run_sql(home, "UPDATE alembic_version_core SET version_num = 'core_0005'")
    previous, last = "", 0
    for row in run_sql(home, "SELECT id, time, event, module, outcome, admin, issuer, serial, worker_id, details "
                             "FROM audit_log ORDER BY id"):
        previous, last = _old_mac(key, previous, row), row.id
        run_sql(home, "UPDATE audit_log SET mac = :mac WHERE id = :rid", mac=previous, rid=row.id)
    import hashlib
    import hmac
    seal = hmac.new(key, f"head|{last}|{previous}".encode(), hashlib.sha256).hexdigest()
    run_sql(home, "UPDATE meta SET value = :v WHERE key = 'audit.head'", v=f"{last} {previous} {seal}")

    monkeypatch.setenv("SIGNPEER_NODE_ID", "node-new")
    assert signpeer.in_process("setproperty", "global", "GLOB.NEW", "1").code == 0  # migrates, then appends
    code, out, err = signpeer.in_process("auditlog", "--verify")
    assert code == 0, err
    code, out, err = signpeer.in_process("auditlog", "--json")
    records = json.loads(out)
    assert [r["node"] for r in records if r["id"] <= last] == [None] * last
    assert [r["node"] for r in records if r["id"] > last] == ["node-new"]
    # An old record given a node afterwards no longer fits its MAC.
    run_sql(home, "UPDATE audit_log SET node = 'node-new' WHERE id = :rid", rid=last)
    code, _, err = signpeer.in_process("auditlog", "--verify")
    assert code != 0 and f"broken at record {last}:" in err


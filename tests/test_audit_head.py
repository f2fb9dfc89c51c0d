"""The audit chain's head kept in memory: an append from the process that wrote the last record
moves the head with a compare-and-set and inserts its records (two statements); after another
process appended, or a record was written past the chain, the append finds the head moved and
reads it, and the chain stays whole. On SQLite and PostgreSQL (``SIGNPEER_TEST_DATABASE_URL``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select

from signpeer_core.storage import Admin, AuditEvent, open_store
from signpeer_core.storage.tables import audit_log
from signpeer_core.testing import counted


def event(name: str) -> AuditEvent:
    return AuditEvent(name, "TEST", Admin("head-test"))


def test_a_remembered_head_saves_two_reads_and_another_writer_is_noticed(services: Any) -> None:
    store = services.store
    other = open_store(store.database.url)  # a second process on the same database
    try:
        store.audit(event("FIRST"))  # learns the head
        with counted(store.database) as seen:
            store.audit(event("REMEMBERED"))
        assert seen.reads == 0 and seen.writes == 2, seen.sql
        assert seen.of("write")[0].startswith("UPDATE meta") and "audit_log" in seen.of("write")[1]

        other.audit(event("OTHER"))  # the head moved under this process
        with counted(store.database) as seen:
            store.audit(event("AFTER_OTHER"))
        # The compare-and-set changed nothing; the head and the last id were read; records, head.
        assert seen.reads == 2 and seen.writes == 3, seen.sql
        with counted(store.database) as seen:
            store.audit(event("REMEMBERED_AGAIN"))
        assert seen.statements == 2, seen.sql
        assert store.verify_audit_log().intact

        names = [e.event for e in store.audit_events(admin="head-test")]
        assert names[:5] == ["REMEMBERED_AGAIN", "AFTER_OTHER", "OTHER", "REMEMBERED", "FIRST"]
    finally:
        other.close()


def test_a_row_written_past_the_chain_does_not_fail_the_next_append(services: Any) -> None:
    store = services.store
    store.audit(event("FIRST"))
    with store.database.transaction() as conn:  # written past the chain, without the key
        last = conn.execute(select(func.max(audit_log.c.id))).scalar_one()
        conn.execute(insert(audit_log), {"id": last + 1, "time": 0.0, "event": "FORGED", "module": "X",
                                         "outcome": "SUCCESS", "admin": "CN=root-admin", "details": "{}"})
    store.audit(event("AFTER_FORGED"))  # the remembered head no longer ends the chain: read it
    verification = store.verify_audit_log()
    assert not verification.intact and verification.broken_id == last + 1
    assert [e.event for e in store.audit_events(admin="head-test")][:1] == ["AFTER_FORGED"]

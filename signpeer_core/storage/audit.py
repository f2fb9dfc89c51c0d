"""The audit log's table: who changed what, written in the same transaction as the change itself.

:class:`~signpeer_core.audit.Admin` names who made a change and
:class:`~signpeer_core.audit.AuditEvent` is one record (both in :mod:`signpeer_core.audit`). Writers pass their events to
the store method that makes the change (``audit=[...]``), so the log never misses a change that
happened and never shows one that did not.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, insert, select

from signpeer_core.audit import Admin, AuditEvent
from signpeer_core.storage.database import Database, after_commit
from signpeer_core.storage.tables import audit_log

audit_log_stream = logging.getLogger("signpeer.audit")

_INSERT = insert(audit_log)
_COLUMNS = (audit_log.c.id, audit_log.c.time, audit_log.c.event, audit_log.c.module, audit_log.c.outcome,
            audit_log.c.admin, audit_log.c.issuer, audit_log.c.serial, audit_log.c.worker_id, audit_log.c.details)


def write_audit(conn: Connection, events: Iterable[AuditEvent] | None) -> None:
    """Write ``events`` in the caller's transaction."""
    rows = [{"time": e.time or time.time(), "event": e.event, "module": e.module, "outcome": e.outcome,
             "admin": e.admin.name, "issuer": e.admin.issuer, "serial": e.admin.serial, "worker_id": e.worker_id,
             "details": json.dumps(e.details, sort_keys=True)} for e in events or ()]
    if rows:
        conn.execute(_INSERT, rows)
        after_commit(conn, lambda: stream_audit(rows))


def stream_audit(rows: list[dict[str, Any]]) -> None:
    """The audit stream: one ``signpeer.audit`` log line per committed record (in the JSON log
    format, the record's fields as the line's fields)."""
    if not audit_log_stream.isEnabledFor(logging.INFO):
        return
    for row in rows:
        fields = {k: v for k, v in row.items() if k not in ("details", "time")}
        fields["details"] = json.loads(row["details"])
        audit_log_stream.info("audit event=%(event)s module=%(module)s outcome=%(outcome)s admin=%(admin)r "
                              "worker_id=%(worker_id)s details=%(details)s", fields)


class AuditLog:
    """Reads and single writes of the audit log."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def add(self, event: AuditEvent) -> None:
        with self.database.transaction() as conn:
            write_audit(conn, [event])

    def events(
        self, event: str | None = None, worker_id: int | None = None, admin: str | None = None,
        since: float | None = None, until: float | None = None, limit: int = 1000,
    ) -> list[AuditEvent]:
        """Newest first, filtered by event name, worker, part of the admin's name and time range."""
        query = select(*_COLUMNS)
        if event:
            query = query.where(audit_log.c.event == event.upper())
        if worker_id is not None:
            query = query.where(audit_log.c.worker_id == worker_id)
        if admin:
            query = query.where(audit_log.c.admin.like(f"%{admin}%"))
        if since is not None:
            query = query.where(audit_log.c.time >= since)
        if until is not None:
            query = query.where(audit_log.c.time <= until)
        query = query.order_by(audit_log.c.id.desc()).limit(limit)
        with self.database.read() as conn:
            rows = conn.execute(query).all()
        return [AuditEvent(id=r.id, time=r.time, event=r.event, module=r.module, outcome=r.outcome,
                           admin=Admin(r.admin, r.issuer, r.serial), worker_id=r.worker_id,
                           details=json.loads(r.details))
                for r in rows]

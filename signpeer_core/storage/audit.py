"""The audit log: who changed what, written in the same transaction as the change itself.

:class:`Admin` names who made a change (a CLI user, an administrator certificate, a peer) and
:class:`AuditEvent` is one record in SignServer's system log shape. Writers pass their events to
the store method that makes the change (``audit=[...]``), so the log never misses a change that
happened and never shows one that did not.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, insert, select

from signpeer_core.storage.database import Database
from signpeer_core.storage.tables import audit_log


@dataclass(frozen=True)
class Admin:
    """Who made a change: a CLI user, an administrator certificate, or a peer."""

    name: str
    issuer: str | None = None
    serial: str | None = None

    @classmethod
    def cli(cls) -> Admin:
        import getpass

        try:
            user = getpass.getuser()
        except Exception:  # no passwd entry in some containers
            user = "unknown"
        return cls(name=f"CLI user {user}")


@dataclass
class AuditEvent:
    """One audit log record (SignServer's system log shape)."""

    event: str
    module: str
    admin: Admin
    worker_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    outcome: str = "SUCCESS"
    time: float = 0.0
    id: int | None = None


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

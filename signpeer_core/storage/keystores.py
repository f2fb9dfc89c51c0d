"""INTERNAL keystores: a soft token's PKCS#12 file kept in the database, one per worker."""

from __future__ import annotations

import time

from sqlalchemy import Connection, bindparam, delete, select

from signpeer_core.storage.audit import AuditEvent, AuditLog
from signpeer_core.storage.database import Database
from signpeer_core.storage.tables import keystores

_READ = select(keystores.c.data).where(keystores.c.worker_id == bindparam("worker_id"))
_DELETE = delete(keystores).where(keystores.c.worker_id == bindparam("worker_id"))


def delete_keystore(conn: Connection, worker_id: int) -> None:
    """Remove a worker's keystore in the caller's transaction (the worker is being removed)."""
    conn.execute(_DELETE, {"worker_id": worker_id})


class Keystores:
    def __init__(self, database: Database, audit_log: AuditLog) -> None:
        self.database = database
        self.audit_log = audit_log
        self._put = database.upsert(keystores, ["worker_id"])
        self._read = database.prepare(_READ)  # a soft token reads its keystore on every reload

    def get(self, worker_id: int) -> bytes | None:
        data = self._read.scalar({"worker_id": worker_id})
        return bytes(data) if data is not None else None

    def put(self, worker_id: int, data: bytes, audit: list[AuditEvent] | None = None) -> None:
        with self.database.transaction() as conn:
            conn.execute(self._put, {"worker_id": worker_id, "data": data, "updated": time.time()})
            self.audit_log.write(conn, audit)

"""The audit log's table: who changed what, written in the same transaction as the change itself,
each record sealed into an HMAC chain.

:class:`~signpeer_core.audit.Admin` names who made a change and
:class:`~signpeer_core.audit.AuditEvent` is one record (both in :mod:`signpeer_core.audit`). Writers pass their events to
the store method that makes the change (``audit=[...]``), so the log never misses a change that
happened and never shows one that did not.

**Integrity.** Each record carries ``mac = HMAC(audit key, previous mac | the record's id, time,
event, module, outcome, administrator, worker, details[, node])``, the audit key being derived from the
data protection key outside the database (:mod:`.protection`). The ``meta`` row ``audit.head``
holds the last record's id and mac, sealed by the same key. Appends are serialized by that row:
the write transaction reads it ``FOR UPDATE`` (PostgreSQL; SQLite's write transaction holds the
whole database), so writers of several processes extend one chain.

**The head in memory.** A process remembers the head it last committed. Its next append
computes the new records from it and moves the head with a compare-and-set (``UPDATE meta
... WHERE value = <the remembered head> AND no record has a higher id``, which also takes the
row's lock, as ``FOR UPDATE`` does), then inserts the records: two statements instead of four.
When the update changes no row (another process or node appended since, the transaction
before rolled back, a record was written past the chain), the append reads the head and the
last id as above, in the same transaction. What is written is the same either way. Someone who can write the
database but not read the key file cannot change, insert, delete, back-date or truncate records
without :meth:`AuditLog.verify` naming the first record that no longer fits.

**Node.** Each record names the node (``node_id``) of the process that wrote it, covered by its
MAC. Records from before the column existed (core_0007) have no node; their MAC covers the fields
it covered when they were written, so old chains still verify, and giving such a record a node
(or taking a newer record's away) breaks its MAC like any other change.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Text, bindparam, cast, exists, func, insert, select, update

from signpeer_core.audit import Admin, AuditEvent
from signpeer_core.storage.aftercommit import after_commit
from signpeer_core.storage.database import Database
from signpeer_core.storage.tables import audit_log, meta

if TYPE_CHECKING:
    from signpeer_core.storage.protection import SecretBox

audit_log_stream = logging.getLogger("signpeer.audit")

HEAD = "audit.head"
_a = audit_log
_INSERT = insert(_a)
_COLUMNS = (_a.c.id, _a.c.time, _a.c.event, _a.c.module, _a.c.outcome,
            _a.c.admin, _a.c.issuer, _a.c.serial, _a.c.worker_id, _a.c.details, _a.c.node)
_HEAD = select(meta.c.value).where(meta.c.key == HEAD)
_HEAD_FOR_UPDATE = _HEAD.with_for_update()
_LAST_ID = select(func.coalesce(func.max(_a.c.id), 0))
_SET_HEAD = update(meta).where(meta.c.key == HEAD).values(value=bindparam("head"))
_SET_MAC = update(_a).where(_a.c.id == bindparam("rid")).values(mac=bindparam("mac"))
#: Move the head on from the one this process remembers, if it is still the chain's end.
_MOVE_HEAD = (update(meta)
              .where(meta.c.key == HEAD, meta.c.value == bindparam("expected"),
                     ~exists().where(_a.c.id > bindparam("last_id")))
              .values(value=bindparam("head")))


def _content(row: Any) -> bytes:
    """What a record's MAC covers, in a fixed form (the stored details text as it is); the node
    only when the record has one (records from before core_0007 were chained without it)."""
    fields = [row["id"], repr(float(row["time"])), row["event"], row["module"], row["outcome"],
              row["admin"], row["issuer"], row["serial"], row["worker_id"], row["details"]]
    if row["node"] is not None:
        fields.append(row["node"])
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class Verification:
    """What :meth:`AuditLog.verify` found: records checked, and the first that breaks the chain."""

    records: int
    broken_id: int | None = None
    problem: str = ""

    @property
    def intact(self) -> bool:
        return self.broken_id is None and not self.problem


class AuditLog:
    """Writes (chained) and reads of the audit log; ``node`` is the node id this process writes its
    records as (default the host name, as :attr:`Settings.node_id <signpeer_core.settings.Settings.node_id>`)."""

    def __init__(self, database: Database, box: SecretBox, node: str | None = None) -> None:
        self.database = database
        self.key = box.audit_key
        self.node = node or socket.gethostname()
        #: (head value, last id, last mac) as this process last committed them, or None. Set after
        #: commit without a lock: a stale value (two threads' commits told in the other order)
        #: only sends the next append down the reading path.
        self._known: tuple[str, int, str] | None = None
        # The append's two statements, on the driver's cursor (every published change writes them).
        self._move_head = database.prepare_write(_MOVE_HEAD)
        self._insert = database.prepare_write(_INSERT)

    def _mac(self, previous: str, row: Any) -> str:
        return hmac.new(self.key, previous.encode() + b"|" + _content(row), hashlib.sha256).hexdigest()

    def _head_value(self, last_id: int, last_mac: str) -> str:
        seal = hmac.new(self.key, f"head|{last_id}|{last_mac}".encode(), hashlib.sha256).hexdigest()
        return f"{last_id} {last_mac} {seal}"

    def _parse_head(self, value: str | None) -> tuple[int, str, bool]:
        """(last id, last mac, whether the head's seal is right); (0, "", True) when there is none."""
        if value is None:
            return 0, "", True
        parts = value.split(" ")
        if len(parts) != 3 or not parts[0].isdigit():
            return 0, "", False
        last_id, last_mac = int(parts[0]), parts[1]
        return last_id, last_mac, hmac.compare_digest(self._head_value(last_id, last_mac), value)

    def write(self, conn: Connection, events: Iterable[AuditEvent] | None) -> None:
        """Append ``events`` to the chain in the caller's (write) transaction."""
        events = list(events or ())
        if not events:
            return
        known = self._known
        if known is not None:
            expected, last_id, previous = known
            rows, value = self._seal(events, last_id, previous)
            if self._move_head.run_in(conn, {"expected": expected, "last_id": last_id, "head": value})[1] == 1:
                self._insert.run_in(conn, rows)
                self._remember(conn, value, rows)
                return
        head = conn.execute(_HEAD_FOR_UPDATE).scalar()  # first: serializes the appenders
        _, previous, _ = self._parse_head(head)
        # The ids continue after the last row, not after the head: a row written past the chain
        # (which verify() reports) must not make every later write fail on a taken id.
        last_id = conn.execute(_LAST_ID).scalar_one()
        rows, value = self._seal(events, last_id, previous)
        conn.execute(_INSERT, rows)
        if head is None:
            conn.execute(insert(meta), {"key": HEAD, "value": value})
        else:
            conn.execute(_SET_HEAD, {"head": value})
        self._remember(conn, value, rows)

    def _seal(self, events: list[AuditEvent], last_id: int, previous: str) -> tuple[list[dict[str, Any]], str]:
        """The rows of ``events`` (ids after ``last_id``, each MAC over the one before) and the new head."""
        rows: list[dict[str, Any]] = []
        now = time.time()
        for offset, e in enumerate(events, start=1):
            row = {"id": last_id + offset, "time": e.time or now, "event": e.event, "module": e.module,
                   "outcome": e.outcome, "admin": e.admin.name, "issuer": e.admin.issuer, "serial": e.admin.serial,
                   "worker_id": e.worker_id, "details": json.dumps(e.details, sort_keys=True),
                   "node": self.node}
            row["mac"] = previous = self._mac(previous, row)
            rows.append(row)
        return rows, self._head_value(rows[-1]["id"], previous)

    def _remember(self, conn: Connection, value: str, rows: list[dict[str, Any]]) -> None:
        """Once committed: the records go to the audit stream and the head is remembered."""
        known = (value, rows[-1]["id"], rows[-1]["mac"])

        def committed() -> None:
            self._known = known
            stream_audit(rows)

        after_commit(conn, committed)

    def seal_existing(self, conn: Connection) -> int:
        """Chain the records written before the chain existed (when the key is first set up)."""
        rows = conn.execute(select(*_COLUMNS).where(_a.c.mac.is_(None)).order_by(_a.c.id)).mappings().all()
        if not rows or conn.execute(_HEAD).scalar() is not None:
            return 0
        previous, updates = "", []
        for row in rows:
            previous = self._mac(previous, row)
            updates.append({"rid": row["id"], "mac": previous})
        conn.execute(_SET_MAC, updates)
        conn.execute(insert(meta), {"key": HEAD, "value": self._head_value(rows[-1]["id"], previous)})
        return len(rows)

    def add(self, event: AuditEvent) -> None:
        with self.database.transaction() as conn:
            self.write(conn, [event])

    def _chain(self) -> Iterator[Any]:
        query = select(*_COLUMNS, _a.c.mac).order_by(_a.c.id)
        with self.database.read() as conn:
            yield from conn.execute(query).mappings()

    def verify(self) -> Verification:
        """Recompute the chain from the first record; the first record that does not fit, if any."""
        with self.database.read() as conn:
            head = conn.execute(_HEAD).scalar()
        previous, count, last_id = "", 0, 0
        for row in self._chain():
            count += 1
            if row["mac"] is None or not hmac.compare_digest(self._mac(previous, row), row["mac"]):
                return Verification(count, row["id"], f"record {row['id']} was changed, inserted or back-dated, "
                                    "or the record before it was removed")
            previous, last_id = row["mac"], row["id"]
        head_id, head_mac, sealed = self._parse_head(head)
        if not sealed:
            return Verification(count, None, "the chain's head record (meta audit.head) was changed")
        if (head_id, head_mac) != (last_id, previous):
            return Verification(count, last_id + 1 if head_id > last_id else head_id,
                                f"records after {last_id} were removed (the chain ends at {head_id})"
                                if head_id > last_id else f"the chain's head names record {head_id}, not the last")
        return Verification(count)

    def events(
        self, event: str | None = None, worker_id: int | None = None, admin: str | None = None,
        since: float | None = None, until: float | None = None, limit: int = 1000, node: str | None = None,
    ) -> list[AuditEvent]:
        """Newest first (by time, then by id), filtered by event name, worker, part of the admin's
        name, time range and node."""
        query = select(*_COLUMNS)
        if event:
            query = query.where(_a.c.event == event.upper())
        if worker_id is not None:
            query = query.where(_a.c.worker_id == worker_id)
        if admin:
            query = query.where(_a.c.admin.like(f"%{admin}%"))
        if node:
            query = query.where(_a.c.node == node)
        if since is not None:
            query = query.where(_a.c.time >= since)
        if until is not None:
            query = query.where(_a.c.time <= until)
        query = query.order_by(_a.c.time.desc(), _a.c.id.desc()).limit(limit)
        return self._events(query)

    def query(self, terms: Iterable[tuple[str, str, Any]], offset: int = 0, limit: int = 1000) -> list[AuditEvent]:
        """Newest first, the records matching every ``(column, operator, value)`` term
        (``auditlog -query -criteria``): columns of the table (``id``, ``time``, ``event``,
        ``module``, ``outcome``, ``admin``, ``issuer``, ``serial``, ``worker_id``, ``details``, ``node``),
        SignServer's operators EQ, NEQ, GT, GE, LT, LE, LIKE (on the column as text), NULL, NOTNULL."""
        query = select(*_COLUMNS)
        for column_name, op, value in terms:
            if column_name not in _QUERYABLE:
                raise ValueError(f"the audit log has no column {column_name!r}")
            column = _a.c[column_name]
            if op == "LIKE":
                query = query.where(cast(column, Text).like(str(value)))
            elif op == "NULL":
                query = query.where(column.is_(None))
            elif op == "NOTNULL":
                query = query.where(column.is_not(None))
            else:
                query = query.where(_COMPARE[op](column, value))
        query = query.order_by(_a.c.time.desc(), _a.c.id.desc()).offset(offset).limit(limit)
        return self._events(query)

    def _events(self, query: Any) -> list[AuditEvent]:
        with self.database.read() as conn:
            rows = conn.execute(query).all()
        return [AuditEvent(id=r.id, time=r.time, event=r.event, module=r.module, outcome=r.outcome,
                           admin=Admin(r.admin, r.issuer, r.serial), worker_id=r.worker_id,
                           details=json.loads(r.details), node=r.node)
                for r in rows]


_QUERYABLE = ("id", "time", "event", "module", "outcome", "admin", "issuer", "serial", "worker_id", "details", "node")
_COMPARE: dict[str, Any] = {
    "EQ": lambda c, v: c == v, "NEQ": lambda c, v: c != v, "GT": lambda c, v: c > v,
    "GE": lambda c, v: c >= v, "LT": lambda c, v: c < v, "LE": lambda c, v: c <= v,
}


def stream_audit(rows: list[dict[str, Any]]) -> None:
    """The audit stream: one ``signpeer.audit`` log line per committed record (in the JSON log
    format, the record's fields as the line's fields)."""
    if not audit_log_stream.isEnabledFor(logging.INFO):
        return
    for row in rows:
        fields = {k: v for k, v in row.items() if k not in ("details", "time", "mac")}
        fields["details"] = json.loads(row["details"])
        audit_log_stream.info("audit event=%(event)s module=%(module)s outcome=%(outcome)s admin=%(admin)r "
                              "worker_id=%(worker_id)s node=%(node)s details=%(details)s", fields)

"""The configuration database: every SQL statement of signpeer lives behind :class:`Store`.

SQLite in the data directory is the default (WAL, ``synchronous=NORMAL``, a busy timeout so
several processes can share it). A PostgreSQL backend for several nodes is a second subclass
of the same interface. Every write runs in a transaction; a change that also writes an audit
event writes both in the same transaction, so the log never misses a change that happened.

The schema is versioned: :data:`MIGRATIONS` is applied in order on open, so a newer signpeer
migrates an older database when it starts.

``config_generation`` is a counter bumped by ``reload``; each server process polls it and
rebuilds its in-memory workers when it changes. Signing requests never touch the database.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signpeer_core.audit import Admin, AuditEvent
from signpeer_core.errors import ConfigurationError

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE worker_properties (
            worker_id INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
            PRIMARY KEY (worker_id, key));
        CREATE TABLE global_properties (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, event TEXT NOT NULL,
            module TEXT NOT NULL, outcome TEXT NOT NULL, admin TEXT NOT NULL, issuer TEXT,
            serial TEXT, worker_id INTEGER, details TEXT NOT NULL);
        CREATE INDEX audit_log_time ON audit_log (time);
        CREATE TABLE keystores (worker_id INTEGER PRIMARY KEY, data BLOB NOT NULL, updated REAL NOT NULL);
        INSERT INTO meta (key, value) VALUES ('config_generation', '0');
        """,
    ),
    (
        2,
        # Peer Systems: the incoming-connections registry (every call with a client certificate,
        # authorized or not), shared by every server process through the database.
        """
        CREATE TABLE incoming_peers (
            id INTEGER PRIMARY KEY AUTOINCREMENT, subject TEXT NOT NULL, issuer TEXT NOT NULL,
            serial TEXT NOT NULL, remote_address TEXT NOT NULL, first_seen REAL NOT NULL,
            last_seen REAL NOT NULL, count INTEGER NOT NULL,
            UNIQUE (serial, issuer, remote_address));
        """,
    ),
    (
        3,
        # One-time keys, RA mode: certificate requests queued for a CA peer, and the CA peers
        # that poll for them. In the database so that every server process sees every request
        # and answer (a waiting signing request polls its row; nothing depends on one process).
        """
        CREATE TABLE ra_requests (
            id TEXT PRIMARY KEY, queue TEXT NOT NULL, worker_id INTEGER NOT NULL, worker TEXT NOT NULL,
            request TEXT NOT NULL, state TEXT NOT NULL, created REAL NOT NULL, deadline REAL NOT NULL,
            claimed_at REAL, claimed_by TEXT, claims INTEGER NOT NULL DEFAULT 0,
            answered_at REAL, answered_by TEXT, chain TEXT, error TEXT);
        CREATE INDEX ra_requests_open ON ra_requests (state, queue, created);
        CREATE TABLE ra_pollers (
            identity TEXT PRIMARY KEY, queues TEXT NOT NULL, first_poll REAL NOT NULL, last_poll REAL NOT NULL,
            polls INTEGER NOT NULL);
        """,
    ),
    (
        4,
        # Token activation shared by the server processes of a node: the authentication code
        # sealed with a secret that only the running server's processes hold (never on disk).
        """
        CREATE TABLE token_activations (
            worker_id INTEGER NOT NULL, node TEXT NOT NULL, active INTEGER NOT NULL, sealed BLOB,
            updated REAL NOT NULL, PRIMARY KEY (worker_id, node));
        INSERT OR IGNORE INTO meta (key, value) VALUES ('activation_generation', '0');
        """,
    ),
]


@dataclass
class IncomingPeer:
    """One row of the incoming peer connections registry (the Admin Web's "Incoming Connections")."""

    id: int
    subject: str
    issuer: str
    serial: str  # lower-case hex, as in WSPEERS rules
    remote_address: str
    first_seen: float
    last_seen: float
    count: int


@dataclass
class RaRequest:
    """One queued RA certificate request (one-time keys, RA mode)."""

    id: str
    queue: str
    worker_id: int
    worker: str
    request: str  # JSON: the CSR, filled templates, profiles, validity (see signpeer_onetimecrypto)
    state: str  # pending, claimed, answered, expired
    created: float
    deadline: float
    claimed_at: float | None
    claimed_by: str | None
    claims: int
    answered_at: float | None
    answered_by: str | None
    chain: str | None  # PEM, leaf first, when the CA issued
    error: str | None  # the CA's refusal, or why the request was withdrawn

    def effective_state(self, now: float) -> str:
        """``expired`` for an open request past its deadline (nobody waits for it any more)."""
        if self.state in ("pending", "claimed") and now >= self.deadline:
            return "expired"
        return self.state


@dataclass
class RaPoller:
    """A CA peer that collects RA requests: who, which queues, when it last asked."""

    identity: str
    queues: str
    first_poll: float
    last_poll: float
    polls: int


class Store:
    """The store interface. Backends implement the ``_sql`` primitives; callers use the methods."""

    # -- worker properties ---------------------------------------------------------------
    def worker_ids(self) -> list[int]:
        raise NotImplementedError

    def worker_properties(self, worker_id: int) -> dict[str, str]:
        raise NotImplementedError

    def all_worker_properties(self) -> dict[int, dict[str, str]]:
        raise NotImplementedError

    def update_worker(
        self,
        worker_id: int,
        set_props: dict[str, str] | None = None,
        remove: list[str] | tuple[str, ...] = (),
        audit: list[AuditEvent] | None = None,
    ) -> None:
        raise NotImplementedError

    def remove_worker(self, worker_id: int, audit: list[AuditEvent] | None = None) -> None:
        raise NotImplementedError

    def next_worker_id(self) -> int:
        raise NotImplementedError

    def apply_changes(
        self,
        workers: dict[int, tuple[dict[str, str], list[str]]] | None = None,
        global_set: dict[str, str] | None = None,
        global_remove: list[str] | tuple[str, ...] = (),
        audit: list[AuditEvent] | None = None,
        bump_generation: bool = False,
    ) -> int | None:
        """Several workers' and global changes in ONE transaction (property files: all or nothing).

        ``workers`` maps a worker id to (properties to set, keys to remove); removals run first.
        ``bump_generation``: also bump ``config_generation`` in that transaction (the change is
        published) and return the new generation; otherwise None.
        """
        raise NotImplementedError

    # -- global properties ---------------------------------------------------------------
    def global_properties(self) -> dict[str, str]:
        raise NotImplementedError

    def update_global(
        self, set_props: dict[str, str] | None = None, remove: list[str] | tuple[str, ...] = (),
        audit: list[AuditEvent] | None = None,
    ) -> None:
        raise NotImplementedError

    # -- reload signalling ---------------------------------------------------------------
    def config_generation(self) -> int:
        raise NotImplementedError

    def bump_config_generation(self) -> int:
        raise NotImplementedError

    # -- token activation relay -------------------------------------------------------------
    def token_activations(self, node: str) -> dict[int, tuple[bool, bytes | None]]:
        """Worker id of a token owner → (active, sealed code) published by this node's server."""
        raise NotImplementedError

    def set_token_activation(self, worker_id: int, node: str, active: bool, sealed: bytes | None) -> int:
        """Publish an activation (or deactivation); returns the new ``activation_generation``."""
        raise NotImplementedError

    def clear_token_activations(self, node: str) -> None:
        raise NotImplementedError

    def activation_generation(self) -> int:
        raise NotImplementedError

    # -- audit ---------------------------------------------------------------------------
    def audit(self, event: AuditEvent) -> None:
        raise NotImplementedError

    def audit_events(
        self, event: str | None = None, worker_id: int | None = None, admin: str | None = None,
        since: float | None = None, until: float | None = None, limit: int = 1000,
    ) -> list[AuditEvent]:
        raise NotImplementedError

    # -- INTERNAL keystores --------------------------------------------------------------
    def keystore(self, worker_id: int) -> bytes | None:
        raise NotImplementedError

    def put_keystore(self, worker_id: int, data: bytes, audit: list[AuditEvent] | None = None) -> None:
        raise NotImplementedError

    # -- incoming peer connections -------------------------------------------------------
    def touch_incoming_peers(self, seen: list[tuple[str, str, str, str, float, int]]) -> None:
        """Record calls of peers: (subject, issuer, serial hex, remote address, last seen, count).

        A new (serial, issuer, address) gets a row; a known one gets ``last_seen`` and
        ``count += count``. One transaction for the whole batch.
        """
        raise NotImplementedError

    def incoming_peers(self) -> list[IncomingPeer]:
        """Every recorded peer, by subject, then address, then most recently seen first."""
        raise NotImplementedError

    def incoming_peer(self, peer_id: int) -> IncomingPeer | None:
        raise NotImplementedError

    def remove_incoming_peer(self, peer_id: int) -> bool:
        """Forget one row; False when there was none."""
        raise NotImplementedError

    # -- RA requests (one-time keys) ---------------------------------------------------------
    def ra_submit(self, request_id: str, queue: str, worker_id: int, worker: str, request: str,
                  created: float, deadline: float) -> None:
        """Queue a request as ``pending``."""
        raise NotImplementedError

    def ra_has_work(self, queues: list[str] | None, now: float, lease: float) -> bool:
        """True when :meth:`ra_claim` would find something (a read: cheap for idle long polls)."""
        raise NotImplementedError

    def ra_claim(self, queues: list[str] | None, claimer: str, now: float, lease: float,
                 limit: int) -> list[RaRequest]:
        """Claim up to ``limit`` requests in one transaction, oldest first: pending ones, and
        claimed ones whose claim is older than ``lease`` seconds (offered again), all before their
        deadline. Records the poll of ``claimer`` (``queues`` None: every queue)."""
        raise NotImplementedError

    def ra_answer(self, request_id: str, answerer: str, now: float, chain: str | None,
                  error: str | None) -> tuple[bool, RaRequest | None]:
        """Record the CA's answer unless the request is already answered or past its deadline.

        Returns (accepted, the request as it is now; None when unknown).
        """
        raise NotImplementedError

    def ra_withdraw(self, request_id: str, now: float, reason: str) -> bool:
        """Mark an unanswered request ``expired`` (its signing request stopped waiting)."""
        raise NotImplementedError

    def ra_request(self, request_id: str) -> RaRequest | None:
        raise NotImplementedError

    def ra_requests(self, states: list[str] | None = None, now: float | None = None,
                    limit: int = 1000) -> list[RaRequest]:
        """Requests, newest first; ``states`` filters on :meth:`RaRequest.effective_state`."""
        raise NotImplementedError

    def ra_pollers(self) -> list[RaPoller]:
        """CA peers that have polled, most recent first."""
        raise NotImplementedError

    def ra_purge(self, before: float) -> int:
        """Delete answered and expired requests created before ``before``; the number deleted."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class SQLiteStore(Store):
    """SQLite backend. One connection per process, guarded by a lock (calls are short)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    # -- plumbing --------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): all or nothing."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _migrate(self) -> None:
        with self.transaction() as c:
            exists = c.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
            version = 0
            if exists:
                row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                version = int(row[0]) if row else 1
            latest = MIGRATIONS[-1][0]
            if version > latest:
                raise ConfigurationError(
                    f"database {self.path} has schema version {version}, newer than this signpeer "
                    f"understands ({latest}); upgrade signpeer"
                )
            for number, script in MIGRATIONS:
                if number > version:
                    for statement in script.split(";"):
                        if statement.strip():
                            c.execute(statement)
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (str(latest),),
            )

    def schema_version(self) -> int:
        return int(self.query("SELECT value FROM meta WHERE key='schema_version'")[0][0])

    def _write_audit(self, c: sqlite3.Connection, events: list[AuditEvent] | None) -> None:
        for e in events or ():
            c.execute(
                "INSERT INTO audit_log (time, event, module, outcome, admin, issuer, serial, worker_id, details)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (e.time or time.time(), e.event, e.module, e.outcome, e.admin.name, e.admin.issuer,
                 e.admin.serial, e.worker_id, json.dumps(e.details, sort_keys=True)),
            )

    # -- worker properties -----------------------------------------------------------------
    def worker_ids(self) -> list[int]:
        return [r[0] for r in self.query("SELECT DISTINCT worker_id FROM worker_properties ORDER BY worker_id")]

    def worker_properties(self, worker_id: int) -> dict[str, str]:
        rows = self.query("SELECT key, value FROM worker_properties WHERE worker_id=?", (worker_id,))
        return dict(rows)

    def all_worker_properties(self) -> dict[int, dict[str, str]]:
        out: dict[int, dict[str, str]] = {}
        for wid, key, value in self.query("SELECT worker_id, key, value FROM worker_properties"):
            out.setdefault(wid, {})[key] = value
        return out

    def update_worker(self, worker_id, set_props=None, remove=(), audit=None) -> None:  # type: ignore[override]
        with self.transaction() as c:
            for key in remove:
                c.execute("DELETE FROM worker_properties WHERE worker_id=? AND key=?", (worker_id, key.upper()))
            for key, value in (set_props or {}).items():
                c.execute(
                    "INSERT INTO worker_properties (worker_id, key, value) VALUES (?, ?, ?) "
                    "ON CONFLICT(worker_id, key) DO UPDATE SET value=excluded.value",
                    (worker_id, key.upper(), str(value)),
                )
            self._write_audit(c, audit)

    def remove_worker(self, worker_id, audit=None) -> None:  # type: ignore[override]
        with self.transaction() as c:
            c.execute("DELETE FROM worker_properties WHERE worker_id=?", (worker_id,))
            c.execute("DELETE FROM keystores WHERE worker_id=?", (worker_id,))
            self._write_audit(c, audit)

    def next_worker_id(self) -> int:
        row = self.query("SELECT MAX(worker_id) FROM worker_properties")[0]
        return (row[0] or 0) + 1

    def apply_changes(self, workers=None, global_set=None, global_remove=(), audit=None,  # type: ignore[override]
                      bump_generation=False) -> int | None:
        with self.transaction() as c:
            for worker_id, (set_props, remove) in (workers or {}).items():
                for key in remove:
                    c.execute("DELETE FROM worker_properties WHERE worker_id=? AND key=?", (worker_id, key.upper()))
                for key, value in set_props.items():
                    c.execute(
                        "INSERT INTO worker_properties (worker_id, key, value) VALUES (?, ?, ?) "
                        "ON CONFLICT(worker_id, key) DO UPDATE SET value=excluded.value",
                        (worker_id, key.upper(), str(value)),
                    )
            for key in global_remove:
                c.execute("DELETE FROM global_properties WHERE key=?", (key.upper(),))
            for key, value in (global_set or {}).items():
                c.execute(
                    "INSERT INTO global_properties (key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (key.upper(), str(value)),
                )
            self._write_audit(c, audit)
            if not bump_generation:
                return None
            c.execute("UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key='config_generation'")
            return int(c.execute("SELECT value FROM meta WHERE key='config_generation'").fetchone()[0])

    # -- global properties -----------------------------------------------------------------
    def global_properties(self) -> dict[str, str]:
        return dict(self.query("SELECT key, value FROM global_properties"))

    def update_global(self, set_props=None, remove=(), audit=None) -> None:  # type: ignore[override]
        with self.transaction() as c:
            for key in remove:
                c.execute("DELETE FROM global_properties WHERE key=?", (key.upper(),))
            for key, value in (set_props or {}).items():
                c.execute(
                    "INSERT INTO global_properties (key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (key.upper(), str(value)),
                )
            self._write_audit(c, audit)

    # -- reload --------------------------------------------------------------------------
    def config_generation(self) -> int:
        return int(self.query("SELECT value FROM meta WHERE key='config_generation'")[0][0])

    def bump_config_generation(self) -> int:
        with self.transaction() as c:
            c.execute("UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key='config_generation'")
            return int(c.execute("SELECT value FROM meta WHERE key='config_generation'").fetchone()[0])

    # -- token activation relay -------------------------------------------------------------
    def token_activations(self, node: str) -> dict[int, tuple[bool, bytes | None]]:
        rows = self.query("SELECT worker_id, active, sealed FROM token_activations WHERE node=?", (node,))
        return {wid: (bool(active), bytes(sealed) if sealed is not None else None) for wid, active, sealed in rows}

    def set_token_activation(self, worker_id: int, node: str, active: bool, sealed: bytes | None) -> int:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO token_activations (worker_id, node, active, sealed, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(worker_id, node) DO UPDATE SET active=excluded.active, sealed=excluded.sealed, "
                "updated=excluded.updated",
                (worker_id, node, int(active), sealed, time.time()),
            )
            c.execute("UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) "
                      "WHERE key='activation_generation'")
            return int(c.execute("SELECT value FROM meta WHERE key='activation_generation'").fetchone()[0])

    def clear_token_activations(self, node: str) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM token_activations WHERE node=?", (node,))

    def activation_generation(self) -> int:
        return int(self.query("SELECT value FROM meta WHERE key='activation_generation'")[0][0])

    # -- audit ---------------------------------------------------------------------------
    def audit(self, event: AuditEvent) -> None:
        with self.transaction() as c:
            self._write_audit(c, [event])

    def audit_events(self, event=None, worker_id=None, admin=None, since=None, until=None, limit=1000):  # type: ignore[override]
        sql = "SELECT id, time, event, module, outcome, admin, issuer, serial, worker_id, details FROM audit_log WHERE 1=1"
        params: list[Any] = []
        if event:
            sql += " AND event = ?"
            params.append(event.upper())
        if worker_id is not None:
            sql += " AND worker_id = ?"
            params.append(worker_id)
        if admin:
            sql += " AND admin LIKE ?"
            params.append(f"%{admin}%")
        if since is not None:
            sql += " AND time >= ?"
            params.append(since)
        if until is not None:
            sql += " AND time <= ?"
            params.append(until)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [
            AuditEvent(id=r[0], time=r[1], event=r[2], module=r[3], outcome=r[4],
                       admin=Admin(r[5], r[6], r[7]), worker_id=r[8], details=json.loads(r[9]))
            for r in self.query(sql, tuple(params))
        ]

    # -- INTERNAL keystores --------------------------------------------------------------
    def keystore(self, worker_id: int) -> bytes | None:
        rows = self.query("SELECT data FROM keystores WHERE worker_id=?", (worker_id,))
        return bytes(rows[0][0]) if rows else None

    def put_keystore(self, worker_id, data, audit=None) -> None:  # type: ignore[override]
        with self.transaction() as c:
            c.execute(
                "INSERT INTO keystores (worker_id, data, updated) VALUES (?, ?, ?) "
                "ON CONFLICT(worker_id) DO UPDATE SET data=excluded.data, updated=excluded.updated",
                (worker_id, data, time.time()),
            )
            self._write_audit(c, audit)

    # -- incoming peer connections -------------------------------------------------------
    _INCOMING_COLUMNS = "id, subject, issuer, serial, remote_address, first_seen, last_seen, count"

    def touch_incoming_peers(self, seen) -> None:  # type: ignore[override]
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO incoming_peers (subject, issuer, serial, remote_address, first_seen, last_seen, count)"
                " VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6) ON CONFLICT(serial, issuer, remote_address) DO UPDATE SET"
                " subject=excluded.subject, last_seen=MAX(last_seen, excluded.last_seen),"
                " count=count + excluded.count",
                seen,
            )

    def incoming_peers(self) -> list[IncomingPeer]:
        rows = self.query(f"SELECT {self._INCOMING_COLUMNS} FROM incoming_peers"
                          " ORDER BY subject, remote_address, last_seen DESC")
        return [IncomingPeer(*r) for r in rows]

    def incoming_peer(self, peer_id: int) -> IncomingPeer | None:
        rows = self.query(f"SELECT {self._INCOMING_COLUMNS} FROM incoming_peers WHERE id=?", (peer_id,))
        return IncomingPeer(*rows[0]) if rows else None

    def remove_incoming_peer(self, peer_id: int) -> bool:
        with self.transaction() as c:
            return c.execute("DELETE FROM incoming_peers WHERE id=?", (peer_id,)).rowcount > 0

    # -- RA requests (one-time keys) ---------------------------------------------------------
    _RA_COLUMNS = ("id, queue, worker_id, worker, request, state, created, deadline, claimed_at, claimed_by,"
                   " claims, answered_at, answered_by, chain, error")

    @staticmethod
    def _queue_filter(queues: list[str] | None) -> tuple[str, tuple[Any, ...]]:
        if not queues:
            return "", ()
        return f" AND queue IN ({', '.join('?' for _ in queues)})", tuple(queues)

    def ra_submit(self, request_id, queue, worker_id, worker, request, created, deadline) -> None:  # type: ignore[override]
        with self.transaction() as c:
            c.execute("INSERT INTO ra_requests (id, queue, worker_id, worker, request, state, created, deadline)"
                      " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                      (request_id, queue, worker_id, worker, request, created, deadline))

    def ra_has_work(self, queues, now, lease) -> bool:  # type: ignore[override]
        where, params = self._queue_filter(queues)
        rows = self.query(
            "SELECT 1 FROM ra_requests WHERE (state='pending' OR (state='claimed' AND claimed_at <= ?))"
            " AND deadline > ?" + where + " LIMIT 1", (now - lease, now, *params))
        return bool(rows)

    def ra_claim(self, queues, claimer, now, lease, limit) -> list[RaRequest]:  # type: ignore[override]
        where, params = self._queue_filter(queues)
        with self.transaction() as c:
            c.execute(
                "INSERT INTO ra_pollers (identity, queues, first_poll, last_poll, polls) VALUES (?, ?, ?, ?, 1)"
                " ON CONFLICT(identity) DO UPDATE SET queues=excluded.queues, last_poll=excluded.last_poll,"
                " polls=polls + 1", (claimer, ",".join(queues or []) or "*", now, now))
            rows = c.execute(
                "UPDATE ra_requests SET state='claimed', claimed_at=?, claimed_by=?, claims=claims + 1"
                " WHERE id IN (SELECT id FROM ra_requests WHERE (state='pending' OR (state='claimed' AND"
                " claimed_at <= ?)) AND deadline > ?" + where + " ORDER BY created LIMIT ?)"
                f" RETURNING {self._RA_COLUMNS}",
                (now, claimer, now - lease, now, *params, limit)).fetchall()
        return sorted((RaRequest(*r) for r in rows), key=lambda r: r.created)

    def ra_answer(self, request_id, answerer, now, chain, error):  # type: ignore[override]
        with self.transaction() as c:
            accepted = c.execute(
                "UPDATE ra_requests SET state='answered', answered_at=?, answered_by=?, chain=?, error=?"
                " WHERE id=? AND state IN ('pending', 'claimed') AND deadline > ?",
                (now, answerer, chain, error, request_id, now)).rowcount > 0
            row = c.execute(f"SELECT {self._RA_COLUMNS} FROM ra_requests WHERE id=?", (request_id,)).fetchone()
        return accepted, (RaRequest(*row) if row else None)

    def ra_withdraw(self, request_id, now, reason) -> bool:  # type: ignore[override]
        with self.transaction() as c:
            return c.execute(
                "UPDATE ra_requests SET state='expired', answered_at=?, error=?"
                " WHERE id=? AND state IN ('pending', 'claimed')", (now, reason, request_id)).rowcount > 0

    def ra_request(self, request_id: str) -> RaRequest | None:
        rows = self.query(f"SELECT {self._RA_COLUMNS} FROM ra_requests WHERE id=?", (request_id,))
        return RaRequest(*rows[0]) if rows else None

    def ra_requests(self, states=None, now=None, limit=1000) -> list[RaRequest]:  # type: ignore[override]
        now = time.time() if now is None else now
        rows = self.query(f"SELECT {self._RA_COLUMNS} FROM ra_requests ORDER BY created DESC LIMIT ?",
                          (limit if not states else -1,))
        out = [RaRequest(*r) for r in rows]
        if states:
            wanted = {s.lower() for s in states}
            out = [r for r in out if r.effective_state(now) in wanted][:limit]
        return out

    def ra_pollers(self) -> list[RaPoller]:
        rows = self.query("SELECT identity, queues, first_poll, last_poll, polls FROM ra_pollers"
                          " ORDER BY last_poll DESC")
        return [RaPoller(*r) for r in rows]

    def ra_purge(self, before: float) -> int:
        with self.transaction() as c:
            return c.execute("DELETE FROM ra_requests WHERE created < ? AND (state IN ('answered', 'expired')"
                             " OR deadline < ?)", (before, before)).rowcount

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def open_store(url: str) -> Store:
    """Open the store named by a database URL (``sqlite:///path``; ``postgresql://`` later)."""
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return SQLiteStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        raise ConfigurationError("the PostgreSQL backend is not available yet; use sqlite:///<path>")
    raise ConfigurationError(f"unsupported database URL '{url}'; use sqlite:///<path>")

"""The incoming peer connections registry's table: one row per (serial, issuer, remote address).

Owned by this plugin (owner ``peerconnector``, revisions in ``migrations/``); rows live in the
database so every server process of every node and the command line see the same list; ``node``
is the node that last saw the peer. Written through the
core's public database object (``services.store.database``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    Column,
    Connection,
    Float,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    case,
    delete,
    func,
    select,
)

from signpeer_core.api import Database, MigrationSource

#: The audit event of forgetting an incoming connection (``peers clear``, the Admin Web's Clear).
CLEARED = "INCOMING_PEER_CLEARED"

metadata = MetaData()

incoming_peers = Table(
    "incoming_peers", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject", Text, nullable=False),
    Column("issuer", Text, nullable=False),
    Column("serial", Text, nullable=False),
    Column("remote_address", Text, nullable=False),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("count", Integer, nullable=False),
    Column("node", Text, nullable=False, server_default=""),
    UniqueConstraint("serial", "issuer", "remote_address"),
    sqlite_autoincrement=True,
)

_t = incoming_peers
_COLUMNS = (_t.c.id, _t.c.subject, _t.c.issuer, _t.c.serial, _t.c.remote_address, _t.c.first_seen, _t.c.last_seen,
            _t.c.count, _t.c.node)
_ALL = select(*_COLUMNS).order_by(_t.c.subject, _t.c.remote_address, _t.c.last_seen.desc())
_ONE = select(*_COLUMNS).where(_t.c.id == bindparam("id"))
_REMOVE = delete(_t).where(_t.c.id == bindparam("id"))


def migration_source() -> MigrationSource:
    """This plugin's tables for the ``signpeer_migrations`` hook (adopts schema version 2 of old databases)."""
    return MigrationSource(owner="peerconnector", location=Path(__file__).with_name("migrations"),
                           metadata=metadata, legacy_revisions={2: "peerconnector_0001"})


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
    node: str = ""  # the node that last saw it


#: (subject, issuer, serial hex, remote address, last seen, count): one call or a coalesced batch.
Sighting = tuple[str, str, str, str, float, int]


class IncomingPeers:
    """Reads and writes of the registry."""

    def __init__(self, database: Database, node: str = "") -> None:
        self.database = database
        self.node = node  # this process's node: recorded with each sighting
        self._touch = database.upsert(_t, ["serial", "issuer", "remote_address"], lambda new: {
            "subject": new.subject,
            "last_seen": case((new.last_seen > _t.c.last_seen, new.last_seen), else_=_t.c.last_seen),
            "count": _t.c.count + new.count,
            "node": new.node,
        })

    def touch(self, seen: list[Sighting]) -> None:
        """Record calls of peers. A new (serial, issuer, address) gets a row; a known one gets
        ``last_seen`` and ``count += count``. One transaction for the whole batch."""
        rows = [{"subject": subject, "issuer": issuer, "serial": serial, "remote_address": address,
                 "first_seen": last_seen, "last_seen": last_seen, "count": count, "node": self.node}
                for subject, issuer, serial, address, last_seen, count in seen]
        if rows:
            with self.database.transaction() as conn:
                conn.execute(self._touch, rows)

    def all(self) -> list[IncomingPeer]:
        """Every recorded peer, by subject, then address, then most recently seen first."""
        with self.database.read() as conn:
            return [IncomingPeer(**r._mapping) for r in conn.execute(_ALL).all()]

    def count(self) -> int:
        """How many rows the registry holds (for ``/metrics``)."""
        with self.database.read() as conn:
            return int(conn.execute(select(func.count()).select_from(_t)).scalar_one())

    def get(self, peer_id: int) -> IncomingPeer | None:
        with self.database.read() as conn:
            row = conn.execute(_ONE, {"id": peer_id}).first()
        return IncomingPeer(**row._mapping) if row else None

    def remove(self, peer_id: int, audit: Callable[[Connection], None] | None = None) -> bool:
        """Forget one row; False when there was none. ``audit`` writes its record in the same transaction."""
        with self.database.transaction() as conn:
            removed = conn.execute(_REMOVE, {"id": peer_id}).rowcount > 0
            if removed and audit is not None:
                audit(conn)
            return removed

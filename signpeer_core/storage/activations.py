"""Token activation shared by the server processes of a node.

``signpeer activatecryptotoken`` reaches one server process; it publishes the authentication code
here, sealed with a secret that only the running server's processes hold (never on disk), and
bumps ``activation_generation`` so the other processes activate the same token
(:mod:`signpeer_core.activation`).
"""

from __future__ import annotations

import time

from sqlalchemy import bindparam, delete, select

from signpeer_core.storage import generations
from signpeer_core.storage.database import Database
from signpeer_core.storage.generations import ACTIVATION, bump_generation
from signpeer_core.storage.tables import token_activations

_t = token_activations
_FOR_NODE = select(_t.c.worker_id, _t.c.active, _t.c.sealed).where(_t.c.node == bindparam("node"))
_CLEAR = delete(_t).where(_t.c.node == bindparam("node"))


class TokenActivations:
    def __init__(self, database: Database) -> None:
        self.database = database
        self._set = database.upsert(_t, ["worker_id", "node"])
        self._generation = database.prepare(generations.READ)  # polled by every server process

    def for_node(self, node: str) -> dict[int, tuple[bool, bytes | None]]:
        """Worker id of a token owner → (active, sealed code) published by this node's server."""
        with self.database.read() as conn:
            rows = conn.execute(_FOR_NODE, {"node": node}).all()
        return {wid: (bool(active), bytes(sealed) if sealed is not None else None) for wid, active, sealed in rows}

    def set(self, worker_id: int, node: str, active: bool, sealed: bytes | None) -> int:
        """Publish an activation (or deactivation); returns the new ``activation_generation``."""
        with self.database.transaction() as conn:
            conn.execute(self._set, {"worker_id": worker_id, "node": node, "active": int(active), "sealed": sealed,
                                     "updated": time.time()})
            return bump_generation(conn, ACTIVATION, self.database)

    def clear(self, node: str) -> None:
        with self.database.transaction() as conn:
            conn.execute(_CLEAR, {"node": node})

    def generation(self) -> int:
        return int(self._generation.scalar({"name": ACTIVATION}))

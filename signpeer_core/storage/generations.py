"""Generation counters in ``meta``: ``config_generation`` and ``activation_generation``.

A counter is bumped in the transaction that makes a change active; every server process polls it
and reloads what it caches when it moves. Reading one is a single indexed row.
"""

from __future__ import annotations

from sqlalchemy import Connection, Integer, Text, bindparam, cast, select, update

from signpeer_core.storage.tables import meta

CONFIG = "config_generation"
ACTIVATION = "activation_generation"

#: Read with :meth:`Database.prepare` where it is polled (it runs every poll interval).
READ = select(meta.c.value).where(meta.c.key == bindparam("name"))
_BUMP = (update(meta).where(meta.c.key == bindparam("name"))
         .values(value=cast(cast(meta.c.value, Integer) + 1, Text)).returning(meta.c.value))


def bump_generation(conn: Connection, key: str) -> int:
    """Add one in the caller's transaction; the new value."""
    return int(conn.execute(_BUMP, {"name": key}).scalar_one())

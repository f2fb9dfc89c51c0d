"""Generation counters in ``meta``: ``config_generation`` and ``activation_generation``.

A counter is bumped in the transaction that makes a change active, and the same transaction
notifies the channel of the counter's name (:meth:`Database.notify`): every server process
listens, re-reads the counter and reloads what it caches when it moved (and also checks it on a
slow timer, in case a notification was lost). Reading one is a single indexed row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Connection, Integer, Text, bindparam, cast, select, update

from signpeer_core.storage.tables import meta

if TYPE_CHECKING:
    from signpeer_core.storage.database import Database

CONFIG = "config_generation"
ACTIVATION = "activation_generation"

#: Read with :meth:`Database.prepare` where it is polled (it runs every poll interval).
READ = select(meta.c.value).where(meta.c.key == bindparam("name"))
_BUMP = (update(meta).where(meta.c.key == bindparam("name"))
         .values(value=cast(cast(meta.c.value, Integer) + 1, Text)).returning(meta.c.value))


def bump_generation(conn: Connection, key: str, database: Database | None = None) -> int:
    """Add one in the caller's transaction; the new value. With ``database``, also notify the
    channel named ``key`` (the listeners are told when the transaction commits)."""
    value = int(conn.execute(_BUMP, {"name": key}).scalar_one())
    if database is not None:
        database.notify(key, str(value), conn)
    return value

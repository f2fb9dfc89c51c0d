"""Generation counters in ``meta``: ``config_generation`` and ``activation_generation``.

A counter is bumped in the transaction that makes a change active, and the same transaction
notifies the channel of the counter's name (:meth:`Database.notify`): every server process
listens, re-reads the counter and reloads what it caches when it moved (and also checks it on a
slow timer, in case a notification was lost). Reading one is a single indexed row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Integer, Text, bindparam, cast, select, update

from signpeer_core.storage.tables import meta

if TYPE_CHECKING:
    from signpeer_core.storage.database import Database

CONFIG = "config_generation"
ACTIVATION = "activation_generation"
#: ``meta`` rows ``config_scope.<generation % KEPT_SCOPES>``: which workers the latest published
#: generations concern (see :func:`record_scope`).
SCOPES = "config_scope."
#: How many generations the scope rows remember; a process further behind reloads everything.
KEPT_SCOPES = 64
#: Every scope row (key and value), in one read.
READ_SCOPES = select(meta.c.key, meta.c.value).where(meta.c.key.like(bindparam("prefix")))

#: Read with :meth:`Database.prepare` where it is polled (it runs every poll interval).
READ = select(meta.c.value).where(meta.c.key == bindparam("name"))
_BUMP = (update(meta).where(meta.c.key == bindparam("name"))
         .values(value=cast(cast(meta.c.value, Integer) + 1, Text)).returning(meta.c.value))


def bump_generation(conn: Connection, key: str, database: Database | None = None) -> int:
    """Add one in the caller's transaction; the new value. With ``database``, also notify the
    channel named ``key`` (the listeners are told when the transaction commits)."""
    if database is None:
        return int(conn.execute(_BUMP, {"name": key}).scalar_one())
    rows, _ = database.memo("generations.bump", lambda: database.prepare_write(_BUMP)).run_in(conn, {"name": key})
    if len(rows) != 1:
        raise RuntimeError(f"the generation counter '{key}' is missing from the meta table")
    value = int(rows[0][0])
    database.notify(key, str(value), conn)
    return value


def record_scope(conn: Connection, generation: int, worker_ids: Iterable[int] | None, database: Database) -> None:
    """Remember, in the transaction that bumped ``config_generation`` to ``generation``, which
    workers that generation changed (None: everything, e.g. global properties or ``reload all``).

    A server process that sees the generation move reads these rows: when every generation it
    missed names its workers, it rebuilds only those (``reload <one worker>`` stays one worker's
    work on a server with 10,000); otherwise, or when it is more than :data:`KEPT_SCOPES`
    behind, it rebuilds everything. One statement: the row of ``generation % KEPT_SCOPES``
    is overwritten (a publish is a handful of statements; see the renewal statement counts).
    """
    value = json.dumps([generation, None if worker_ids is None else sorted(set(worker_ids))])
    # Built and compiled once per database (building an upsert costs more than running it), run on
    # the driver's cursor.
    upsert = database.memo("generations.scope_upsert", lambda: database.prepare_write(database.upsert(meta, ["key"])))
    upsert.run_in(conn, {"key": f"{SCOPES}{generation % KEPT_SCOPES}", "value": value})


def changed_workers(rows: Iterable[tuple[str, str]], since: int, until: int) -> set[int] | None:
    """The workers changed by generations ``since`` (exclusive) to ``until`` (inclusive) according
    to the scope rows (``(key, value)``); None when one of them changed everything or is not
    remembered. Only the rows of those generations' slots are decoded (a process that follows
    another's renewals reads them after every change: one or two of the 64)."""
    slots = {f"{SCOPES}{generation % KEPT_SCOPES}" for generation in range(since + 1, until + 1)}
    scopes: dict[int, list[int] | None] = {}
    for key, value in rows:
        if key not in slots:
            continue
        try:
            generation, ids = json.loads(value)
            scopes[int(generation)] = None if ids is None else [int(i) for i in ids]
        except (ValueError, TypeError):  # a damaged row: that generation counts as "everything"
            continue
    changed: set[int] = set()
    for generation in range(since + 1, until + 1):
        ids = scopes.get(generation)
        if ids is None:
            return None
        changed.update(ids)
    return changed

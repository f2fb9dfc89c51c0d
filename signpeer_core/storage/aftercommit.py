"""Actions taken once a write transaction has committed: the one after-commit mechanism.

Some effects of a write must happen only if, and only once, the write is in the database: the
audit stream's log lines (only what was committed is told), and on SQLite the wake-up datagrams
of :meth:`Database.notify <signpeer_core.storage.database.Database.notify>` (a listener that
looks before the commit would find nothing). Whoever holds the connection of an open
:meth:`Database.transaction` registers them with :func:`after_commit`; the transaction runs them,
in the order registered, after its ``COMMIT`` succeeded and after it gave the connection (and on
SQLite the process's write lock) back. A transaction that rolls back drops them.

(PostgreSQL's ``NOTIFY`` needs none of this: the server itself delivers it at commit.)

An action must be quick and must not write to the database. One that raises is logged and the
others still run: the transaction has committed, so its caller is not told it failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Connection

log = logging.getLogger("signpeer.storage")

#: ``conn.info`` key of the actions registered on the connection's open transaction.
KEY = "signpeer.after_commit"

Action = Callable[[], None]


def after_commit(conn: Connection, action: Action) -> None:
    """Run ``action`` when the transaction of ``conn`` has committed (never if it rolls back)."""
    conn.info.setdefault(KEY, []).append(action)


def discard(conn: Connection) -> None:
    """Forget actions left on ``conn`` by a transaction that rolled back (at the next one's start)."""
    conn.info.pop(KEY, None)


def take(conn: Connection) -> list[Action]:
    """The actions of ``conn``'s transaction, taken while the connection is still the caller's (a
    pooled connection goes back to the pool, and its ``info`` to another user, as it ends)."""
    actions: list[Action] = conn.info.pop(KEY, [])
    return actions


def run(actions: list[Action]) -> None:
    """Run the taken actions (the commit succeeded); one that fails does not stop the others."""
    for action in actions:
        try:
            action()
        except Exception:
            log.exception("an action after a database commit failed")

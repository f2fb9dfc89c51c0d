"""The node registry: one row per running server process of every node sharing the database.

A server process registers when it starts (node id, host, process id, address, the configuration
generation its workers were built from), keeps ``last_seen`` fresh every
:data:`HEARTBEAT` seconds, updates ``generation`` whenever it has applied a new configuration,
and deletes its row when it stops cleanly. A process that died (kill -9, a lost machine) leaves
its row behind; it counts as *stale* once ``last_seen`` is older than :data:`STALE_AFTER`
seconds, or at once when its host is this machine and its process id is gone.

``reload`` waits on this table (every live process at the new generation); ``signpeer nodes``
lists it; the one-time key sweep judges whether a key's process is alive by it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select, update

from signpeer_core.storage.database import Database
from signpeer_core.storage.tables import nodes

#: Seconds between two ``last_seen`` updates of a server process.
HEARTBEAT = 2.0
#: A process not seen for this many seconds is stale (dead, hung or cut off from the database).
STALE_AFTER = 10.0
#: The channel a process notifies after it applied a configuration generation.
APPLIED = "applied"

_n = nodes
_COLUMNS = (_n.c.process, _n.c.node, _n.c.host, _n.c.pid, _n.c.address, _n.c.generation,
            _n.c.activation_generation, _n.c.active_tokens, _n.c.started, _n.c.last_seen)
_ALL = select(*_COLUMNS).order_by(_n.c.node, _n.c.host, _n.c.pid)
_SEEN = update(_n).where(_n.c.process == bindparam("p")).values(last_seen=bindparam("now"))
_APPLIED = (update(_n).where(_n.c.process == bindparam("p"))
            .values(generation=bindparam("g"), activation_generation=bindparam("ag"),
                    active_tokens=bindparam("tokens"), last_seen=bindparam("now")))
_REMOVE = delete(_n).where(_n.c.process == bindparam("p"))


@dataclass(frozen=True)
class NodeProcess:
    """One server process as the registry records it."""

    process: str
    node: str
    host: str
    pid: int
    address: str
    generation: int
    activation_generation: int
    active_tokens: str
    started: float
    last_seen: float

    def alive(self, now: float | None = None) -> bool:
        """Seen within :data:`STALE_AFTER` seconds, and (on this host) its process still exists."""
        now = time.time() if now is None else now
        if now - self.last_seen > STALE_AFTER:
            return False
        if self.host == socket.gethostname():
            return pid_exists(self.pid)
        return True

    @property
    def active_token_ids(self) -> set[int]:
        return {int(x) for x in self.active_tokens.split(",") if x.isdigit()}


def pid_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # another user's process
    except OSError:
        return False
    return True


class NodeRegistry:
    """The registry's reads and writes."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._put = database.upsert(_n, ["process"])
        self._applied = database.prepare_write(_APPLIED)  # after every change a process applies
        #: The last ``active_tokens`` written and its text: a step reports the same tuple again
        #: and again (Membership keeps it while no token moved), joined once, not per step.
        self._tokens_memo: tuple[object, str] = ((), "")

    def register(self, process: str, node: str, address: str, generation: int, activation_generation: int,
                 active_tokens: Iterable[int] = ()) -> None:
        now = time.time()
        with self.database.transaction() as conn:
            conn.execute(self._put, {
                "process": process, "node": node, "host": socket.gethostname(), "pid": os.getpid(),
                "address": address, "generation": generation, "activation_generation": activation_generation,
                "active_tokens": self._tokens(active_tokens), "started": now, "last_seen": now})
            self.database.notify(APPLIED, process, conn)

    def seen(self, process: str) -> bool:
        """Refresh ``last_seen``; False when the row is gone (removed as stale: register again)."""
        with self.database.transaction() as conn:
            return conn.execute(_SEEN, {"p": process, "now": time.time()}).rowcount > 0

    def applied(self, process: str, generation: int, activation_generation: int,
                active_tokens: Iterable[int]) -> bool:
        """Record what the process has applied and tell whoever waits for it (``reload``)."""
        with self.database.transaction() as conn:
            found = self._applied.run_in(conn, {"p": process, "g": generation, "ag": activation_generation,
                                                "tokens": self._tokens(active_tokens), "now": time.time()})[1] > 0
            self.database.notify(APPLIED, process, conn)
        return found

    def _tokens(self, ids: Iterable[int]) -> str:
        last, text = self._tokens_memo
        if ids is not last:
            text = _tokens(ids)
            if isinstance(ids, tuple):
                self._tokens_memo = (ids, text)
        return text

    def remove(self, process: str) -> None:
        with self.database.transaction() as conn:
            conn.execute(_REMOVE, {"p": process})

    def processes(self) -> list[NodeProcess]:
        with self.database.read() as conn:
            return [NodeProcess(**r._mapping) for r in conn.execute(_ALL).all()]

    def live(self) -> list[NodeProcess]:
        now = time.time()
        return [p for p in self.processes() if p.alive(now)]

    def prune(self) -> int:
        """Delete the rows of stale processes; how many."""
        now = time.time()
        gone = [p.process for p in self.processes() if not p.alive(now)]
        if gone:
            with self.database.transaction() as conn:
                conn.execute(_REMOVE, [{"p": p} for p in gone])
        return len(gone)


def _tokens(ids: Iterable[int]) -> str:
    return ",".join(str(i) for i in sorted(set(ids)))

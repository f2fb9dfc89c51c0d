"""The incoming peer connections registry: who called, from where, when, how often.

Every call that presents a client certificate is recorded, authorized or not, so that an
administrator can authorize a peer from its row (``signpeer peers authorize <id>``, the twin
of the Admin Web's "Add Authorization..."). Rows live in the database so every server process
and the command line see the same list.

Writing a row per call would put a database transaction on every kept-alive ping. The
recorder therefore writes the first call of an identity (serial, issuer, address) at once —
so a refused first ping is visible immediately — and coalesces later calls of the same
identity within :attr:`IncomingRecorder.window` seconds in memory: their count and last-seen
time are written by one batched transaction when the window has passed (scheduled on the
event loop, and also at the next call after the window). A crash loses at most one window of
counts, never a first sighting.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio.to_thread

from signpeer_core.api import ServiceUnavailableError

if TYPE_CHECKING:
    from signpeer_peerconnector.authz import PeerIdentity
    from signpeer_peerconnector.incoming_store import IncomingPeers, Sighting

log = logging.getLogger("signpeer.peers")

_Key = tuple[str, str, str]  # (serial hex, issuer, remote address)


@dataclass
class _Pending:
    subject: str
    last_seen: float
    count: int


class IncomingRecorder:
    """Records peer calls in the registry, coalescing repeats of one identity per ``window`` seconds."""

    def __init__(self, registry: IncomingPeers, window: float = 1.0) -> None:
        self.registry = registry
        self.window = window
        self._lock = threading.Lock()
        self._flushed_at: dict[_Key, float] = {}  # when each identity was last written
        self._pending: dict[_Key, _Pending] = {}
        self._flush_scheduled = False
        self._unavailable = False  # the last write found the database away (warned once)

    async def record(self, identity: PeerIdentity, remote_address: str) -> None:
        """Note one call. Awaits a database write only for a first sighting or an old window."""
        now = time.time()
        key = (identity.serial_hex, identity.issuer, remote_address)
        with self._lock:
            last = self._flushed_at.get(key)
            if last is not None and now - last < self.window:
                pending = self._pending.get(key)
                if pending is None:
                    self._pending[key] = _Pending(identity.subject, now, 1)
                else:
                    pending.last_seen = now
                    pending.count += 1
                schedule = not self._flush_scheduled
                self._flush_scheduled = True
            else:
                schedule = False
        if last is not None and now - last < self.window:
            if schedule:
                self._schedule_flush()
            return
        # First sighting in this process, or the window has passed: write now, with whatever
        # else is pending, in one transaction.
        with self._lock:
            batch = self._take_pending()
            pending = batch.pop(key, None)
            count = 1 + (pending.count if pending else 0)
            rows = [(identity.subject, identity.issuer, key[0], key[2], now, count)]
            rows += [(p.subject, k[1], k[0], k[2], p.last_seen, p.count) for k, p in batch.items()]
            for k in [key, *batch]:
                self._flushed_at[k] = now
        await anyio.to_thread.run_sync(self._write, rows)

    def _take_pending(self) -> dict[_Key, _Pending]:
        batch, self._pending = self._pending, {}
        return batch

    def _schedule_flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - always called from a request
            self.flush()
            return
        loop.call_later(self.window, lambda: loop.create_task(self._flush_async()))

    async def _flush_async(self) -> None:
        with self._lock:
            self._flush_scheduled = False
            batch = self._take_pending()
            now = time.time()
            for k in batch:
                self._flushed_at[k] = now
        if batch:
            rows = [(p.subject, k[1], k[0], k[2], p.last_seen, p.count) for k, p in batch.items()]
            await anyio.to_thread.run_sync(self._write, rows)

    def flush(self) -> None:
        """Write everything pending now (tests, shutdown)."""
        with self._lock:
            batch = self._take_pending()
        if batch:
            self._write([(p.subject, k[1], k[0], k[2], p.last_seen, p.count) for k, p in batch.items()])

    def forget(self) -> None:
        """Drop what this process remembers, so the next call of every identity is written at once.

        Used after ``peers clear``-like changes in tests; rows in the database are untouched.
        """
        with self._lock:
            self._flushed_at.clear()

    def _write(self, rows: list[Sighting]) -> None:
        try:
            self.registry.touch(rows)
        except ServiceUnavailableError as exc:  # the database is away: say so once per outage, no traceback
            if not self._unavailable:
                log.warning("recording incoming peer connections failed: %s (retried with the next calls)",
                            exc.message)
            self._unavailable = True
            return
        except Exception:  # the registry is bookkeeping: it must never fail a peer call
            log.exception("recording incoming peer connections failed")
        self._unavailable = False

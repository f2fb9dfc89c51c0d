"""The one-time cycle of a blocking key source (an HSM) in as few trips to a thread as it can.

Each trip to a thread wakes a worker thread and then the event loop again: on a busy machine
that costs the loop more than the device calls themselves (a py-spy ``--gil`` profile of the
one-time benchmark showed about 45 % of the server's GIL-held samples in those hand-offs). So,
when tracing does not need the stages apart:

* :func:`prepare_in_one_trip` makes the key (or takes a pooled one), the CSR and, in RA mode,
  writes the request to the RA queue, in one trip (``submit_to_thread``'s, cheaper than anyio's);
* :func:`run_then_delete` deletes the key in the same call as its one signature (the source
  token decides whether that call runs inline or in a thread: ``CryptoToken.run_blocking``).

What is made in a trip that the request no longer waits for (the client went away) is undone
when the trip ends: the key deleted, the queued request withdrawn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread

from signpeer_core.api import submit_to_thread
from signpeer_onetimecrypto.ra import PeersRAConnector

if TYPE_CHECKING:
    from signpeer_core.api import CAConnector, CertificateRequest, RequestInfo
    from signpeer_onetimecrypto.keysource import KeyPool, KeySource, OneTimeKey
    from signpeer_onetimecrypto.worker import OneTimeCryptoWorker, StageStats

T = TypeVar("T")


class _Trip:
    """What one trip made, so that a failure or a cancellation can undo exactly that."""

    def __init__(self, worker: OneTimeCryptoWorker, source: KeySource, pool: KeyPool | None, request: RequestInfo,
                 ra: PeersRAConnector | None) -> None:
        self.worker = worker
        self.source = source
        self.pool = pool
        self.request = request
        self.ra = ra
        self.key: OneTimeKey | None = None
        self.creq: CertificateRequest | None = None
        self.submitted = False

    def run(self) -> None:
        """In the worker thread: key, CSR, queue write; the stages' times recorded as usual."""
        stats = self.worker.stats
        t0 = time.perf_counter()
        self.key = self.pool.take() if self.pool is not None else None
        if self.key is None:
            self.key = self.source.generate()
        t1 = time.perf_counter()
        stats.record("keygen", t1 - t0)
        self.creq = self.worker.certificate_request(self.key, self.request)
        stats.record("csr", time.perf_counter() - t1)
        if self.ra is not None:
            self.submitted = True  # before the write: a write that fails half-way is withdrawn too
            self.ra.submit(self.creq)

    async def undo(self) -> None:
        """Delete the key and withdraw the queued request, whatever of them exists."""
        try:
            if self.key is not None:
                await asyncio.shield(asyncio.ensure_future(anyio.to_thread.run_sync(self.key.destroy)))
        finally:
            if self.ra is not None:
                await self.ra.abandon(self.request.request_id, self.submitted)


async def prepare_in_one_trip(worker: OneTimeCryptoWorker, source: KeySource, connector: CAConnector,
                              pool: KeyPool | None, request: RequestInfo
                              ) -> tuple[OneTimeKey, CertificateRequest, asyncio.Event | None]:
    """The key, its CSR and — for the peers RA connector — the queued request, made in one trip
    to a worker thread. Returns the key, the CSR's request and, in RA mode, the event to pass to
    :meth:`PeersRAConnector.wait` (else None: call ``request_certificate``)."""
    ra = connector if isinstance(connector, PeersRAConnector) else None
    waiting = ra.expect(request.request_id) if ra is not None else None  # before an answer can come
    trip = _Trip(worker, source, pool, request, ra)
    # Its own task under asyncio.shield: a cancelled request (client gone, shutdown) stops
    # waiting at once, and what the thread still makes is undone when it is done.
    future = submit_to_thread(trip.run)
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        future.add_done_callback(lambda _: _keep(asyncio.ensure_future(trip.undo())))
        raise
    except BaseException:
        await trip.undo()
        raise
    assert trip.key is not None and trip.creq is not None  # set by a trip that returned
    return trip.key, trip.creq, waiting


_UNDOING: set[asyncio.Future[None]] = set()


def _keep(task: asyncio.Future[None]) -> None:
    """Hold a reference to a clean-up task until it ends (the loop keeps only weak ones)."""
    _UNDOING.add(task)
    task.add_done_callback(_UNDOING.discard)


def run_then_delete(stats: StageStats, key: OneTimeKey, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` (the signature), then the one-time key deleted, in one call: on the event
    loop or in one trip to a thread, as the source token runs its signing calls."""
    try:
        return fn(*args)
    finally:
        t0 = time.perf_counter()
        key.destroy()
        stats.record("delete", time.perf_counter() - t0)

"""Load shedding of a one-time worker: at most ``MAX_WAITING`` signing requests in its cycle at once.

A one-time signature waits for its key, its CSR and its certificate (in RA mode, for a CA peer to
answer through the queue). When requests come faster than the CA side answers them, they pile
up; each waits longer than the one before, and once they wait longer than
``CACONNECTOR_WAITTIMEOUT`` every one of them times out with a 503 after the full wait, having
cost a key, a CSR and a queue row: the server answers almost nothing in time (the benchmark's
PostgreSQL run at 200/s offered answered 31/s). So each worker admits at most ``MAX_WAITING``
requests into its cycle at once in one server process (they are counted on the event loop, from
the start of :meth:`OneTimeCryptoToken.acquire` until it returns or fails); one more is answered
at once with a 503 and ``Retry-After`` (:data:`RETRY_AFTER_S`), before any key or queue row is
made, and what was admitted keeps the latency of a queue that short. ``0`` turns the limit off.
The count belongs to the loaded worker: requests that started before a reload of the worker are
not counted against the reloaded one (for a moment after a reload, up to twice the limit wait).
A request whose client goes away leaves the count at once, while its thread may still be
finishing the key, CSR or queue row it had begun: during a wave of disconnects the work in
flight may briefly exceed the limit by those calls (each ends within its own few milliseconds).

The default (:data:`DEFAULT_MAX_WAITING`) is far above what a healthy server has in flight
(rate × latency: 200/s at 50 ms is 10), so it refuses only when the CA side has fallen behind by
about that many requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

from signpeer_core.api import ServiceUnavailableError
from signpeer_onetimecrypto.metrics import shed_requests

#: Requests of one worker in the one-time cycle at once in one server process, by default.
DEFAULT_MAX_WAITING = 100
#: Seconds a refused client is told to wait before it tries again (the ``Retry-After`` header).
RETRY_AFTER_S = 1


class OverloadedError(ServiceUnavailableError):
    """503 with ``Retry-After``: the worker already has ``MAX_WAITING`` requests in its cycle."""

    headers: ClassVar[dict[str, str]] = {"Retry-After": str(RETRY_AFTER_S)}


class WaitingLimit:
    """The count of a worker's requests in the one-time cycle in this process, and its limit.
    Used on the event loop only (no lock)."""

    def __init__(self, limit: int = DEFAULT_MAX_WAITING) -> None:
        self.limit = limit
        self.waiting = 0

    @contextmanager
    def admitted(self, worker_name: str) -> Iterator[None]:
        """Count the block as one waiting request, or raise :class:`OverloadedError` when
        ``limit`` requests wait already."""
        if self.limit and self.waiting >= self.limit:
            shed_requests.labels(worker_name).inc()
            raise OverloadedError(
                f"one-time crypto worker '{worker_name}' has {self.waiting} signing requests waiting for their key "
                f"and certificate in this server process (MAX_WAITING={self.limit}): the CA side does not keep up; "
                f"retry in {RETRY_AFTER_S} s")
        self.waiting += 1
        try:
            yield
        finally:
            self.waiting -= 1

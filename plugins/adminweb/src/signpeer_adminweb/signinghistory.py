"""The signing rate of the last hour for the overview page: a sample of the signing counters a
minute, taken by a daemon thread of each server process.

The counters are the ones ``/metrics`` exposes (``signpeer_signing_requests_total``, summed over
every worker and every process of the server: ``services.metrics.totals()``), so the page and a
Prometheus graph show the same figures. Nothing is added to the signing path; a sample reads
the metric files once a minute.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from signpeer_core.api import Services

log = logging.getLogger("signpeer.adminweb")

#: Seconds between samples, and how many are kept (an hour and one).
INTERVAL = 60.0
KEEP = 61


@dataclass(frozen=True)
class Minute:
    """Signing requests in one interval ending at ``end`` (seconds since the epoch)."""

    end: float
    success: float
    failed: float


class SigningHistory:
    """Samples of (time, successful, failed) totals; :meth:`minutes` turns them into per-interval counts."""

    def __init__(self, services: Services, interval: float = INTERVAL) -> None:
        self.services = services
        self.interval = interval
        self.samples: collections.deque[tuple[float, float, float]] = collections.deque(maxlen=KEEP)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def sample(self) -> tuple[float, float, float] | None:
        metrics = self.services.metrics
        if metrics is None:
            return None
        totals = metrics.totals()
        success = totals.get("success", 0.0)
        point = (time.time(), success, sum(totals.values()) - success)
        with self._lock:
            self.samples.append(point)
        return point

    def start(self) -> None:
        """Sample now and then every interval, in a daemon thread (once per process)."""
        if self._thread is not None or self.services.metrics is None:
            return

        def run() -> None:
            while not self._stop.is_set():
                try:
                    self.sample()
                except Exception:  # a sample that fails is a gap in the chart, not a dead thread
                    log.exception("sampling the signing counters failed")
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=run, name="signpeer-adminweb-history", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def minutes(self, now: tuple[float, float, float] | None = None) -> list[Minute]:
        """Requests per interval between consecutive samples (``now``: an extra, current sample)."""
        with self._lock:
            points = list(self.samples)
        if now is not None:
            points.append(now)
        out = []
        for (_, s0, f0), (t1, s1, f1) in zip(points, points[1:], strict=False):
            # A restart resets the counters: count from zero then.
            out.append(Minute(t1, s1 - s0 if s1 >= s0 else s1, f1 - f0 if f1 >= f0 else f1))
        return out[-60:]

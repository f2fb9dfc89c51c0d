"""The core's own metrics: signing requests (the hot path) and the workers' state (at scrape time).

:class:`SigningMetrics` is what the pipeline and the signers call per request: it adds to
dictionaries in memory and moves the sums into the metrics once a second (see its docstring;
measured with ``bench/bench_rest.py --metrics``). Durations are
histograms per worker *type* (``worker_type``, the implementation), not per worker: with ten
thousand workers a histogram per worker would make a scrape of hundreds of thousands of lines;
the per-worker request counter tells which worker is busy or failing.

:class:`WorkerStateCollector` reads the runtime's memory when ``/metrics`` is scraped: status
and reason, token activation, signer certificate validity.
"""

from __future__ import annotations

import asyncio
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from signpeer_core.metrics import (
    DURATION_BUCKETS,
    GaugeMetricFamily,
    counter,
    counter_totals,
    histogram,
    status_outcome,
)

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from signpeer_core.runtime import Runtime
    from signpeer_core.workers import Worker

#: The worker label of a request whose worker does not exist (never the name the client sent).
UNKNOWN_WORKER = "-"
#: Seconds between moving the signing path's sums into the metrics (while requests come in).
FLUSH_INTERVAL = 1.0
#: Time-in-token samples a timer keeps before it sorts them into its buckets (also at each flush).
FOLD_AT = 1024


class SigningMetrics:
    """Signing requests per worker and outcome; request and token durations per worker type.

    The signing path only adds to plain dictionaries in memory (about a microsecond); a callback
    on the event loop moves the sums into the prometheus_client metrics once per
    :data:`FLUSH_INTERVAL` while requests come in. In multiprocess mode every update of a metric
    is a locked write into a memory-mapped file, several per request (a counter, and a sum and a
    bucket per histogram): done per request that cost more than the 3 % the signing rate may
    lose; batched it costs nothing measurable. So ``/metrics`` shows a request within a second
    (at once in the process that answers the scrape: it flushes first).
    """

    def __init__(self) -> None:
        self.requests = counter("signpeer_signing_requests", "Signing requests by worker and outcome",
                                ("worker", "outcome"))
        self.duration = histogram("signpeer_signing_request_duration_seconds",
                                  "Whole signing request (parse, authorize, sign) by worker type", ("worker_type",))
        self.token = histogram("signpeer_signing_token_duration_seconds",
                               "Time in the crypto token (the signature itself) by worker type", ("worker_type",))
        self._bounds = list(DURATION_BUCKETS)
        self._zeros = [0.0] * (len(self._bounds) + 2)  # buckets, +Inf, sum
        self._counts: dict[tuple[str, int], int] = {}
        self._durations: dict[str, list[float]] = {}
        #: Time in the token per worker type: the seconds of each signature, one list per type for
        #: the life of the process, bound once into each signer's timer (a signature appends to it:
        #: no look-up, no bucket search); sorted into ``_token_sums`` by :meth:`fold_tokens`.
        self._tokens: dict[str, list[float]] = {}
        self._token_sums: dict[str, list[float]] = {}
        #: Folds run in the event loop (flush) and in signing threads (every FOLD_AT samples): one at a
        #: time, so that no sample is taken twice and none is added to sums already handed over.
        self._fold_lock = threading.Lock()
        self._children: dict[Any, Any] = {}
        self._scheduled = False

    # -- the signing path (event loop) ------------------------------------------------------
    def done(self, worker: Worker | None, status: int, started: float) -> None:
        """One finished request (``status``: 200 or the error's HTTP status; ``started``:
        ``time.perf_counter()`` when it came in)."""
        seconds = time.perf_counter() - started
        if worker is None:
            key: tuple[str, int] = (UNKNOWN_WORKER, status)
            kind = UNKNOWN_WORKER
        else:
            key = (worker.name, status)
            kind = type(worker).type_name
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        self._add(self._durations, kind, seconds)

    def token_timer(self, worker_type: str) -> _TokenTimer:
        """What a signer observes its time in the token with (``timer.observe(seconds)``)."""
        return _TokenTimer(self, worker_type)

    def _add(self, table: dict[str, list[float]], kind: str, seconds: float) -> None:
        sums = table.get(kind)
        if sums is None:
            sums = table[kind] = self._zeros[:]
        sums[bisect_left(self._bounds, seconds)] += 1
        sums[-1] += seconds
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called off the loop (a thread, a test): no batching
            self.flush()
            return
        self._scheduled = True
        loop.call_later(FLUSH_INTERVAL, self.flush)

    # -- into prometheus_client --------------------------------------------------------------
    def flush(self) -> None:
        """Move what the requests added into the metrics (the exposition's values)."""
        self._scheduled = False
        counts, self._counts = self._counts, {}
        durations, self._durations = self._durations, {}
        for (name, status), n in counts.items():
            self._child(self.requests, name, status_outcome(status)).inc(n)
        for kind, sums in durations.items():
            _add_to_histogram(self._child(self.duration, kind), sums)
        with self._fold_lock:
            for kind in list(self._tokens):
                self._fold_locked(kind)
            token_sums, self._token_sums = self._token_sums, {}
        for kind, sums in token_sums.items():
            _add_to_histogram(self._child(self.token, kind), sums)

    def fold_tokens(self, kind: str) -> None:
        """Sort the time-in-token samples of ``kind`` into its bucket counts and sum. The list
        stays (bound into the timers): what was taken is deleted from its front, so a sample
        appended meanwhile (another thread) stays for the next fold."""
        with self._fold_lock:
            self._fold_locked(kind)

    def _fold_locked(self, kind: str) -> None:
        samples = self._tokens[kind]
        taken = samples[:]
        if not taken:
            return
        del samples[:len(taken)]
        sums = self._token_sums.get(kind)
        if sums is None:
            sums = self._token_sums[kind] = self._zeros[:]
        # Sorted once, the bucket counts are a binary search per bound (the bounds are upper
        # bounds, inclusive: the bucket of bisect_left(bounds, seconds)).
        taken.sort()
        below = 0
        for i, bound in enumerate(self._bounds):
            upto = bisect_right(taken, bound, below)
            sums[i] += upto - below
            below = upto
        sums[-2] += len(taken) - below
        sums[-1] += sum(taken)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def totals(self) -> dict[str, float]:
        """Signing requests so far by outcome, all workers and every process of the server."""
        return counter_totals(self.requests, "outcome")


class _TokenTimer:
    """Observes the time in the token of one worker type; its list of samples is bound at creation.

    Once per signature, ``observe(seconds)`` or, on a signer's hot path, the same in two steps:
    ``samples.append(seconds)`` (no Python call), then :meth:`appended` with the list's new
    length, which does something only for the first sample since a flush (it makes sure a flush
    is scheduled) and for the :data:`FOLD_AT`-th (it sorts the samples into bucket counts, so
    the list stays short where no event loop flushes). Every sample is counted once."""

    __slots__ = ("metrics", "kind", "samples")

    def __init__(self, metrics: SigningMetrics, kind: str) -> None:
        self.metrics = metrics
        self.kind = kind
        samples = metrics._tokens.get(kind)
        if samples is None:
            samples = metrics._tokens[kind] = []
        self.samples = samples

    def observe(self, seconds: float) -> None:
        samples = self.samples
        samples.append(seconds)
        count = len(samples)
        if count == 1 or count >= FOLD_AT:
            self.appended(count)

    def appended(self, count: int) -> None:
        """After a signature appended to :attr:`samples`, which now holds ``count``."""
        metrics = self.metrics
        if count >= FOLD_AT:
            metrics.fold_tokens(self.kind)
        if not metrics._scheduled:
            metrics._schedule()


def _add_to_histogram(child: Any, sums: list[float]) -> None:
    """Add batched observations to a histogram child: per-bucket counts (the last is +Inf) and
    their sum. prometheus_client has no public call for "n observations at once"; a child keeps
    one value per bucket (not cumulative) and one for the sum (``Histogram.observe`` adds to
    them the same way), which pyproject pins to the versions tested."""
    for bucket, n in zip(child._buckets, sums[:-1], strict=True):
        if n:
            bucket.inc(n)
    child._sum.inc(sums[-1])


class WorkerStateCollector:
    """Worker status, token activation and signer certificate validity, read from memory."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterable[Metric]:
        # About three lines per worker: a scrape of ten thousand workers stays a few hundred kB
        # (docs/monitoring.md has the measured figures).
        active = GaugeMetricFamily("signpeer_worker_active",
                                   "1 when the worker can process requests, 0 when it is OFFLINE (first reason)",
                                   labels=["worker", "reason"])
        disabled = GaugeMetricFamily("signpeer_worker_disabled", "1 for each worker with DISABLED=true (others absent)",
                                     labels=["worker"])
        token = GaugeMetricFamily("signpeer_token_active", "1 when the crypto token the worker holds itself is "
                                  "activated (a token shared through CRYPTOTOKEN is reported by its owner)",
                                  labels=["worker"])
        not_after = GaugeMetricFamily("signpeer_signer_certificate_not_after_seconds",
                                      "Signer certificate notAfter (seconds since the epoch)", labels=["worker"])
        runtime = self.runtime
        for worker in runtime.workers():
            name = worker.name
            reasons = worker.offline_reasons()
            active.add_metric([name, reasons[0][:200] if reasons else ""], 0.0 if reasons else 1.0)
            if worker.disabled:
                disabled.add_metric([name], 1.0)
            own = runtime.own_token(worker.id)
            if own is not None:
                token.add_metric([name], 1.0 if own.is_active else 0.0)
            chain = worker.chain
            if chain:
                not_after.add_metric([name], chain[0].not_valid_after_utc.timestamp())
        return [active, disabled, token, not_after]

"""The core's own metrics: signing requests (the hot path) and the workers' state (at scrape time).

:class:`SigningMetrics` is what the pipeline and the signers call per request. It keeps the
labelled children it made, so a request costs a dict look-up and the increments (a few
microseconds in multiprocess mode, measured in ``bench/bench_rest.py``). Durations are
histograms per worker *type* (``worker_type``, the implementation), not per worker: with ten
thousand workers a histogram per worker would make a scrape of hundreds of thousands of lines;
the per-worker request counter tells which worker is busy or failing.

:class:`WorkerStateCollector` reads the runtime's memory when ``/metrics`` is scraped: status
and reason, token activation, signer certificate validity.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from signpeer_core.metrics import GaugeMetricFamily, counter, counter_totals, histogram, status_outcome

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from signpeer_core.runtime import Runtime
    from signpeer_core.workers import Worker

#: The worker label of a request whose worker does not exist (never the name the client sent).
UNKNOWN_WORKER = "-"


class SigningMetrics:
    """Signing requests per worker and outcome; request and token durations per worker type."""

    def __init__(self) -> None:
        self.requests = counter("signpeer_signing_requests", "Signing requests by worker and outcome",
                                ("worker", "outcome"))
        self.duration = histogram("signpeer_signing_request_duration_seconds",
                                  "Whole signing request (parse, authorize, sign) by worker type", ("worker_type",))
        self.token = histogram("signpeer_signing_token_duration_seconds",
                               "Time in the crypto token (the signature itself) by worker type", ("worker_type",))
        self._counts: dict[tuple[str, int], Any] = {}
        self._durations: dict[str, Any] = {}

    def done(self, worker: Worker | None, status: int, started: float) -> None:
        """One finished request (``status``: 200 or the error's HTTP status; ``started``:
        ``time.perf_counter()`` when it came in)."""
        seconds = time.perf_counter() - started
        name = worker.name if worker is not None else UNKNOWN_WORKER
        child = self._counts.get((name, status))
        if child is None:
            child = self._counts[(name, status)] = self.requests.labels(name, status_outcome(status))
        child.inc()
        kind = type(worker).type_name if worker is not None else UNKNOWN_WORKER
        timer = self._durations.get(kind)
        if timer is None:
            timer = self._durations[kind] = self.duration.labels(kind)
        timer.observe(seconds)

    def totals(self) -> dict[str, float]:
        """Signing requests so far by outcome, all workers and every process of the server."""
        return counter_totals(self.requests, "outcome")

    def token_timer(self, worker_type: str) -> Any:
        """The histogram child a signer observes its time in the token with."""
        return self.token.labels(worker_type)


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

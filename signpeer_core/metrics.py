"""The metrics seam: Prometheus metrics of every server process, the core's and the plugins'.

Two kinds of metric, both with the ``prometheus_client`` library:

* **Event metrics** (counters, histograms, and gauges a process sets): made once, at import or
  when a plugin starts, with :func:`counter`, :func:`histogram` and :func:`gauge`. Under
  ``signpeer serve --workers N`` every process writes them to memory-mapped files in
  ``<home>/run/metrics/`` (prometheus_client's multiprocess mode, switched on by
  :func:`prepare_multiprocess` before the processes start), and a scrape of any process adds
  up all of them. On a hot path keep the labelled child (``metric.labels(...)``) instead of
  looking it up per event.
* **State metrics** (what is true now: worker status, certificate expiry, a queue's depth):
  computed when ``/metrics`` is scraped by *collectors*, objects with a ``collect()`` method
  returning metric families (:class:`GaugeMetricFamily`, :class:`CounterMetricFamily`).
  Plugins return theirs from the ``signpeer_metrics`` hook; they cost nothing between scrapes.

Names start with ``signpeer_``; labels take values from bounded sets only (configured worker
names, operation names, outcomes), never from what a client sends (``docs/monitoring.md``).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric

from signpeer_core.errors import PluginError
from signpeer_core.exposition import write_text

if TYPE_CHECKING:
    from signpeer_core.services import Services

__all__ = ["Collector", "CounterMetricFamily", "GaugeMetricFamily", "counter", "histogram", "gauge",
           "DURATION_BUCKETS", "CONTENT_TYPE", "prepare_multiprocess", "multiprocess_dir", "process_exited",
           "MetricsRegistry", "status_outcome", "counter_totals"]

log = logging.getLogger("signpeer.metrics")

PREFIX = "signpeer_"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The text format every Prometheus version reads (2.x included).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: Seconds; a signing request takes from about 100 µs (software key) to seconds (a CA in RA mode).
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0)


class Collector(Protocol):
    """What the ``signpeer_metrics`` hook returns: computes state metrics at scrape time."""

    def collect(self) -> Iterable[Metric]: ...


_made: dict[str, tuple[type, tuple[str, ...], Any]] = {}
_made_lock = threading.Lock()


def _make(kind: type, name: str, documentation: str, labelnames: Sequence[str], **options: Any) -> Any:
    if not name.startswith(PREFIX):
        raise PluginError(f"metric name '{name}' must start with '{PREFIX}' (e.g. {PREFIX}<plugin>_<what>)")
    labels = tuple(labelnames)
    with _made_lock:
        known = _made.get(name)
        if known is not None:
            if known[0] is not kind or known[1] != labels:
                raise PluginError(f"metric '{name}' is already defined as a {known[0].__name__} with labels "
                                  f"{list(known[1])}; choose another name")
            return known[2]
        metric = kind(name, documentation, labels, **options)
        _made[name] = (kind, labels, metric)
        return metric


def counter(name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
    """A counter (``_total`` is added to the name in the exposition). Made once per name."""
    return _make(Counter, name, documentation, labelnames)


def histogram(name: str, documentation: str, labelnames: Sequence[str] = (),
              buckets: Sequence[float] = DURATION_BUCKETS) -> Histogram:
    """A histogram, by default with :data:`DURATION_BUCKETS` (seconds)."""
    return _make(Histogram, name, documentation, labelnames, buckets=tuple(buckets))


def gauge(name: str, documentation: str, labelnames: Sequence[str] = (), mode: str = "livesum") -> Gauge:
    """A gauge a process sets. ``mode``: how the values of several processes combine
    (prometheus_client's ``multiprocess_mode``: ``livesum`` adds those of running processes,
    ``max`` keeps the largest, e.g. for a timestamp)."""
    return _make(Gauge, name, documentation, labelnames, multiprocess_mode=mode)


def status_outcome(status: int) -> str:
    """The ``outcome`` label of a request that ended with HTTP ``status`` (a bounded set)."""
    if status < 400:
        return "success"
    return _OUTCOMES.get(status, "error")


_OUTCOMES = {400: "bad_request", 401: "unauthenticated", 403: "unauthorized", 404: "not_found",
             409: "conflict", 413: "bad_request", 503: "unavailable"}


# -- multiprocess mode -----------------------------------------------------------------------

def multiprocess_dir() -> Path | None:
    """The directory of the processes' metric files, when multiprocess mode is on."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def prepare_multiprocess(directory: Path) -> None:
    """Called by ``signpeer serve --workers N`` before it starts the processes: an empty
    directory for their metric files, named in the environment they inherit (prometheus_client
    reads it when a process makes its first metric)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(directory)


def process_exited(pid: int | None = None) -> None:
    """Drop a stopped process's live gauges (its counters stay counted)."""
    if multiprocess_dir() is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(os.getpid() if pid is None else pid)


class _DefaultRegistry:
    """The event metrics of a single process (no multiprocess directory)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


class _Guarded:
    """A state collector whose failure costs its own metrics only, not the whole scrape."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def collect(self) -> Iterable[Metric]:
        try:
            return list(self.collector.collect())
        except Exception:  # a plugin bug or a database error: logged and counted, the rest is served
            log.exception("metrics collector %s failed", type(self.collector).__name__)
            _collector_errors.labels(type(self.collector).__name__).inc()
            return []


_collector_errors = counter("signpeer_metrics_collector_errors", "Scrapes where a state collector failed",
                            ("collector",))


class MetricsRegistry:
    """What ``/metrics`` answers in one process: every process's event metrics, then the state
    collectors of the core and of each plugin (the ``signpeer_metrics`` hook, asked once)."""

    def __init__(self, services: Services, collectors: Iterable[Collector]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        directory = multiprocess_dir()
        if directory is not None:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry, path=str(directory))
        else:
            self.registry.register(_DefaultRegistry())
        for collector in collectors:
            self.registry.register(_Guarded(collector))

    def render(self) -> bytes:
        """The exposition in Prometheus' text format (blocking: reads files and the database);
        the bytes ``prometheus_client.generate_latest`` writes, written faster (exposition.py)."""
        return write_text(self.registry.collect())

    def snapshot(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """The same figures as :meth:`render`, as data: sample name → [(labels, value)] (blocking).
        For pages that show what ``/metrics`` says (the Admin Web's overview)."""
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
        return out


def counter_totals(metric: Counter, label: str) -> dict[str, float]:
    """A counter's value summed over every label but ``label`` and over every process (for a
    cheap periodic sample, e.g. the signing rate of the last hour; blocking in multiprocess mode)."""
    name = metric._name  # prometheus_client keeps the name without _total here
    totals: dict[str, float] = {}
    directory = multiprocess_dir()
    if directory is not None:
        from prometheus_client import multiprocess

        families = multiprocess.MultiProcessCollector.merge(
            [str(p) for p in directory.glob("counter_*.db")], accumulate=True)
    else:
        families = metric.collect()
    for family in families:
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == name + "_total":
                key = sample.labels.get(label, "")
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals

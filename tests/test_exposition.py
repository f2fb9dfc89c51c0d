"""exposition.write_text writes exactly what prometheus_client.generate_latest writes: counters
(with their ``_created`` samples), gauges, histograms, summaries, info, label values that need
escaping, special numbers, timestamps, names outside the legacy pattern."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, Summary, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from signpeer_core.exposition import write_text


class _Tricky:
    def collect(self):
        g = GaugeMetricFamily("signpeer_tricky", 'help with \\ backslash\nand "quotes"', labels=["worker", "reason"])
        g.add_metric(["plain", ""], 1.0)
        g.add_metric(['quote " and \\ backslash', "line\nbreak"], 0.0)
        g.add_metric(["ünïcödé ✓", "x"], 1.7964e9)
        g.add_metric(["nan", "x"], math.nan)
        g.add_metric(["inf", "x"], math.inf)
        g.add_metric(["-inf", "x"], -math.inf)
        g.add_metric(["big", "x"], 12345678901234.0)
        g.add_metric(["small", "x"], 1e-9)
        g.add_metric(["int", "x"], 3)
        yield g
        c = CounterMetricFamily("signpeer_stamped", "with a timestamp", labels=["k"])
        c.add_metric(["a"], 2.0, timestamp=1700000000.123)
        yield c
        yield GaugeMetricFamily("signpeer_no_samples", "empty")
        odd = GaugeMetricFamily("signpeer.dotted name", "a name outside the legacy pattern", labels=["la.bel"])
        odd.add_metric(["v"], 1.0)
        yield odd


def test_the_same_bytes_as_prometheus_client() -> None:
    registry = CollectorRegistry(auto_describe=False)
    requests = Counter("signpeer_t_requests", "Requests", ["worker", "outcome"], registry=registry)
    for i in range(50):
        requests.labels(f"Signer{i:03d}", "success").inc(i)
    requests.labels("Signer000", "bad_request").inc()
    Gauge("signpeer_t_gauge", "A gauge", registry=registry).set(-2.5)
    h = Histogram("signpeer_t_seconds", "Durations", ["worker_type"], registry=registry)
    for v in (0.0001, 0.003, 0.2, 7.0):
        h.labels("PlainSigner").observe(v)
    Summary("signpeer_t_summary", "A summary", registry=registry).observe(0.5)
    Info("signpeer_t_build", "Build", registry=registry).info({"version": "1.0"})
    registry.register(_Tricky())
    expected = generate_latest(registry)
    assert b"_created" in expected and b"\\\\ backslash" in expected  # the cases are really there
    assert write_text(registry.collect()) == expected

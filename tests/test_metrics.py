"""``/metrics`` of a server with two processes: access rule, signing counts summed over the
processes, worker state, bounded labels; the JSON log with the request id the client gets."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from signpeer_core.clientrules import ClientRule, serialize_rules
from signpeer_core.storage import Admin, AuditEvent
from signpeer_core.testing import PKI, add_signer, wait_until

PROCESS = "/signserver/rest/v1/workers/{}/process"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by (name, labels); the parser refuses a malformed one."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(all_samples: dict, name: str, **labels: str) -> float:
    return all_samples.get((name, frozenset(labels.items())), 0.0)


def make_auditor(services, pki: PKI):
    auditor = pki.issue_client("Prometheus scraper")
    services.store.update_global({"GLOB.WSAUDITORS": serialize_rules([ClientRule.for_certificate(auditor.cert)])},
                                 audit=[AuditEvent("SET_GLOBAL_PROPERTY", "GLOBAL_CONFIG", Admin("tests"))])
    return auditor


def test_metrics_of_two_processes(signpeer_home: Path, services, pki: PKI, start_server, https_client) -> None:
    (signpeer_home / "signpeer.toml").write_text(
        (signpeer_home / "signpeer.toml").read_text() + 'log_format = "json"\nlog_file = "logs/server.log"\n')
    add_signer(services, pki, "MetricsSigner", AUTHTYPE="NOAUTH")
    add_signer(services, pki, "Disabled", AUTHTYPE="NOAUTH", DISABLED="true")
    auditor = make_auditor(services, pki)
    server = start_server(signpeer_home, "--workers", "2")

    # A connection per request, until both processes have signed some (request-id prefixes).
    prefixes: set[str] = set()
    request_ids: list[str] = []

    def sign() -> bool:
        with https_client(server, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            r = client.post(PROCESS.format("MetricsSigner"), json={"data": f"doc {len(request_ids)}"})
        assert r.status_code == 200, r.text
        assert r.headers["x-request-id"] == r.json()["requestId"]
        request_ids.append(r.headers["x-request-id"])
        prefixes.add(r.headers["x-request-id"].split("-")[0])
        return len(prefixes) == 2 and len(request_ids) >= 20

    wait_until(sign, timeout=30, what="both server processes signing")
    signed = len(request_ids)
    client = https_client(server)
    for name in ("no-such-worker-1", "no-such-worker-2"):
        assert client.post(PROCESS.format(name), json={"data": "x"}).status_code == 404
    assert client.post(PROCESS.format("MetricsSigner"), json={"nodata": 1}).status_code == 400
    assert client.post(PROCESS.format("Disabled"), json={"data": "x"}).status_code == 503

    # The access rule: Auditor (or Admin) certificate only.
    assert https_client(server).get("/metrics").status_code == 401
    denied = https_client(server, cert="client").get("/metrics")
    assert denied.status_code == 403 and "Auditor or Admin" in denied.json()["error"]
    assert https_client(server, cert="admin").get("/metrics").status_code == 200
    scraper = https_client(server, cert=auditor)
    r = scraper.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")

    def scrape() -> dict | None:
        # Each process moves its requests into the metrics within a second (workermetrics.py).
        got = samples(scraper.get("/metrics").text)
        done = value(got, "signpeer_signing_request_duration_seconds_count", worker_type="PlainSigner")
        return got if done == signed + 2 else None

    got = wait_until(scrape, timeout=10, what="every request in /metrics")
    r = scraper.get("/metrics")

    assert value(got, "signpeer_signing_requests_total", worker="MetricsSigner", outcome="success") == signed
    assert value(got, "signpeer_signing_requests_total", worker="MetricsSigner", outcome="bad_request") == 1
    assert value(got, "signpeer_signing_requests_total", worker="Disabled", outcome="unavailable") == 1
    # Unknown workers are counted under "-": a client cannot add label values.
    assert value(got, "signpeer_signing_requests_total", worker="-", outcome="not_found") == 2
    assert "no-such-worker" not in r.text
    assert value(got, "signpeer_signing_request_duration_seconds_count", worker_type="PlainSigner") == signed + 2  # + bad request + disabled
    assert value(got, "signpeer_signing_token_duration_seconds_count", worker_type="PlainSigner") == signed
    assert value(got, "signpeer_signing_request_duration_seconds_bucket", worker_type="PlainSigner",
                 le="+Inf") == signed + 2

    assert value(got, "signpeer_worker_active", worker="MetricsSigner", reason="") == 1
    reason = "worker is disabled (DISABLED=true)"
    assert value(got, "signpeer_worker_active", worker="Disabled", reason=reason) == 0
    assert value(got, "signpeer_worker_disabled", worker="Disabled") == 1
    assert ("signpeer_worker_disabled", frozenset({("worker", "MetricsSigner")})) not in got
    assert value(got, "signpeer_token_active", worker="MetricsSigner") == 1
    cert = services.runtime.get("MetricsSigner").chain[0]
    assert value(got, "signpeer_signer_certificate_not_after_seconds", worker="MetricsSigner") == \
        cert.not_valid_after_utc.timestamp()

    # The JSON log: one object a line; the worker log line of a request carries the id the client got.
    log = signpeer_home / "logs" / "server.log"

    def worker_lines() -> list[dict]:
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        return [x for x in lines if x["logger"] == "signpeer.worker"]

    wait_until(lambda: len(worker_lines()) >= signed + 4, timeout=10)
    lines = worker_lines()
    by_id = {x["request_id"]: x for x in lines}
    assert set(request_ids) <= set(by_id)
    first = by_id[request_ids[0]]
    assert first["worker"] == "MetricsSigner" and first["outcome"] == "SUCCESS" and first["level"] == "INFO"
    assert isinstance(first["duration_ms"], float) and first["time"].endswith("Z")
    failed = [x for x in lines if x["outcome"] == "FAILED 404"]
    assert len(failed) == 2 and failed[0]["error"].startswith("no worker")
    # A server log line written while serving a request carries its id too (the refused scrape's).
    server_lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    refusal = [x for x in server_lines if x["logger"] == "signpeer.metrics"]
    assert refusal and refusal[0]["request_id"] == denied.headers["x-request-id"]
    assert refusal[0]["message"].startswith("denied /metrics: serial")


def test_metrics_off(signpeer_home: Path, services, pki: PKI, start_server, https_client) -> None:
    add_signer(services, pki, "S", AUTHTYPE="NOAUTH")
    server = start_server(signpeer_home, env={"SIGNPEER_METRICS": "false"})
    assert https_client(server).post(PROCESS.format("S"), json={"data": "x"}).status_code == 200
    r = https_client(server, cert="admin").get("/metrics")
    assert r.status_code == 404 and "metrics are off" in r.json()["error"]


def test_sighup_reopens_the_log_file(signpeer_home: Path, services, pki: PKI, start_server, https_client) -> None:
    """After logrotate moved the file away and sent SIGHUP, the server writes into a new file."""
    (signpeer_home / "signpeer.toml").write_text(
        (signpeer_home / "signpeer.toml").read_text() + 'log_format = "json"\nlog_file = "server.log"\n')
    add_signer(services, pki, "S", AUTHTYPE="NOAUTH")
    server = start_server(signpeer_home, "--workers", "2")
    log = signpeer_home / "server.log"

    def lines(path: Path) -> list[dict]:
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []

    rotated = signpeer_home / "server.log.1"
    log.rename(rotated)
    server.proc.send_signal(signal.SIGHUP)
    # Each process reopens its file; new connections reach both processes.
    ids: set[str] = set()

    def new_lines_in_new_file() -> bool:
        with https_client(server, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            r = client.post(PROCESS.format("S"), json={"data": "after rotation"})
            assert r.status_code == 200
            ids.add(r.headers["x-request-id"])
        logged = {x.get("request_id") for x in lines(log)}
        return len({i.split("-")[0] for i in ids & logged}) == 2

    wait_until(new_lines_in_new_file, timeout=20)
    assert server.proc.poll() is None


def test_the_plugin_hook_example_reaches_metrics(tmp_path: Path, services) -> None:
    """docs/plugin-hooks.md's ``signpeer_metrics`` example, registered as a plugin: its state
    metric and its counter are in the exposition of the process."""
    import re
    import types

    from signpeer_core.metrics import MetricsRegistry
    from signpeer_core.workermetrics import WorkerStateCollector

    text = (Path(__file__).parents[1] / "docs" / "plugin-hooks.md").read_text()
    section = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))["signpeer_metrics"]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    module = types.ModuleType("metrics_doc_example")
    exec(compile(block, "plugin-hooks.md signpeer_metrics", "exec"), module.__dict__)
    module.notes_written.labels("memo").inc(3)
    registry = MetricsRegistry(services, [WorkerStateCollector(services.runtime),
                                          *module.signpeer_metrics(services)])
    got = samples(registry.render().decode())
    assert value(got, "signpeer_example_workers") == len(services.runtime.workers())
    assert value(got, "signpeer_example_notes_written_total", kind="memo") >= 3


def test_a_failing_collector_costs_only_its_own_metrics(services, pki: PKI) -> None:
    from signpeer_core.metrics import MetricsRegistry
    from signpeer_core.workermetrics import WorkerStateCollector

    class Broken:
        def collect(self):
            raise RuntimeError("database gone")

    add_signer(services, pki, "S")
    registry = MetricsRegistry(services, [Broken(), WorkerStateCollector(services.runtime)])
    registry.render()
    got = samples(registry.render().decode())  # the error of the first scrape is counted in the second
    assert value(got, "signpeer_metrics_collector_errors_total", collector="Broken") >= 1
    assert value(got, "signpeer_worker_active", worker="S", reason="") == 1


def test_database_errors_are_counted(tmp_path: Path) -> None:
    import sqlalchemy
    from prometheus_client import REGISTRY

    from signpeer_core.storage.database import Database

    db = Database(f"sqlite:///{tmp_path / 'errors.db'}")
    before = REGISTRY.get_sample_value("signpeer_database_errors_total", {"operation": "read"}) or 0.0
    try:
        with db.read() as conn:
            conn.execute(sqlalchemy.text("SELECT * FROM no_such_table"))
    except sqlalchemy.exc.OperationalError:
        pass
    else:
        raise AssertionError("the statement should have failed")
    with db.read() as conn:
        assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    assert REGISTRY.get_sample_value("signpeer_database_errors_total", {"operation": "read"}) == before + 1
    db.close()


def test_token_timers_bind_their_sums_once_and_lose_nothing() -> None:
    """The time-in-token sums are bound into each signer's timer once (no label look-up per
    signature) and flush() empties them in place: every observation reaches the histogram exactly
    once, across flushes and across timers of one worker type."""
    from signpeer_core.metrics import DURATION_BUCKETS
    from signpeer_core.workermetrics import SigningMetrics

    metrics = SigningMetrics()
    kind = "BoundTimerTestSigner"
    first, second = metrics.token_timer(kind), metrics.token_timer(kind)
    low = next(b for b in DURATION_BUCKETS if b >= 0.0001)

    def histogram() -> dict[tuple[str, str | None], float]:
        return {(s.name, s.labels.get("le")): s.value for family in metrics.token.collect()
                for s in family.samples if s.labels.get("worker_type") == kind}

    metrics._scheduled = True  # a flush is pending (as on the event loop): the timers only add
    for seconds in (0.0001, 0.0001, 2.0):
        first.observe(seconds)
    second.observe(0.0001)
    assert histogram().get(("signpeer_signing_token_duration_seconds_count", None), 0.0) == 0.0
    metrics.flush()
    got = histogram()
    assert got[("signpeer_signing_token_duration_seconds_count", None)] == 4
    assert got[("signpeer_signing_token_duration_seconds_bucket", str(low))] == 3
    assert abs(got[("signpeer_signing_token_duration_seconds_sum", None)] - 2.0003) < 1e-9
    metrics.flush()  # nothing new: nothing added twice
    assert histogram() == got
    metrics._scheduled = True
    second.observe(0.0001)
    metrics.flush()
    got = histogram()
    assert got[("signpeer_signing_token_duration_seconds_count", None)] == 5
    assert got[("signpeer_signing_token_duration_seconds_bucket", str(low))] == 4
    assert got[("signpeer_signing_token_duration_seconds_bucket", "+Inf")] == 5


def test_token_samples_fold_into_the_right_buckets_exactly_once() -> None:
    """A signature only appends its seconds to the timer's list; the list is sorted into bucket
    counts at FOLD_AT samples and at each flush. Values on a bound fall in that bound's bucket
    (``le`` is inclusive), above the last in +Inf; nothing is lost or counted twice, whether a
    sample arrives through observe() or through the signer's append + appended()."""
    import random

    from signpeer_core.metrics import DURATION_BUCKETS
    from signpeer_core.workermetrics import FOLD_AT, SigningMetrics

    metrics = SigningMetrics()
    kind = "FoldTestSigner"
    timer = metrics.token_timer(kind)
    metrics._scheduled = True  # a flush is pending (as on the event loop)
    rng = random.Random(13)
    values = [rng.choice(DURATION_BUCKETS) for _ in range(300)] + [rng.uniform(0, 70) for _ in range(2 * FOLD_AT)]
    values += [0.0, 61.0, 1e-9]
    for i, seconds in enumerate(values):
        if i % 2:
            timer.observe(seconds)
        else:  # the hot path's form
            timer.samples.append(seconds)
            timer.appended(len(timer.samples))
        assert len(timer.samples) < FOLD_AT
    metrics.flush()
    assert timer.samples == []
    got = {(s.name, s.labels.get("le")): s.value for family in metrics.token.collect()
           for s in family.samples if s.labels.get("worker_type") == kind}
    for bound in DURATION_BUCKETS:
        assert got[("signpeer_signing_token_duration_seconds_bucket", str(bound))] == sum(v <= bound for v in values)
    assert got[("signpeer_signing_token_duration_seconds_bucket", "+Inf")] == len(values)
    assert got[("signpeer_signing_token_duration_seconds_count", None)] == len(values)
    assert abs(got[("signpeer_signing_token_duration_seconds_sum", None)] - sum(values)) < 1e-6
    metrics.flush()  # nothing new: nothing added twice
    assert got == {(s.name, s.labels.get("le")): s.value for family in metrics.token.collect()
                   for s in family.samples if s.labels.get("worker_type") == kind}


def test_token_samples_from_threads_beside_flushes_are_counted_once() -> None:
    """Signing threads fold every FOLD_AT samples while flushes fold too: every sample counted
    exactly once (the GIL switched as often as it goes, to interleave the folds)."""
    import sys
    import threading

    from signpeer_core.workermetrics import SigningMetrics

    metrics = SigningMetrics()
    kind = "ThreadedFoldSigner"
    timer = metrics.token_timer(kind)
    metrics._scheduled = True  # no flush from observe(): the test's own loop flushes
    per_thread, threads = 20_000, 4
    running = True

    def sign() -> None:
        for _ in range(per_thread):
            timer.observe(0.001)

    def flush() -> None:
        while running:
            metrics.flush()
            metrics._scheduled = True

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        signers = [threading.Thread(target=sign) for _ in range(threads)]
        flusher = threading.Thread(target=flush)
        flusher.start()
        for t in signers:
            t.start()
        for t in signers:
            t.join()
        running = False
        flusher.join()
    finally:
        sys.setswitchinterval(interval)
    metrics.flush()
    count = [s.value for family in metrics.token.collect() for s in family.samples
             if s.labels.get("worker_type") == kind and s.name.endswith("_count")]
    assert count == [per_thread * threads]


def test_token_timer_schedules_a_flush_for_the_first_sample_since_the_last() -> None:
    """Off the event loop, a first sample flushes at once (as before: no batching there); on
    it, the first sample since a flush schedules the next one."""
    import asyncio

    from signpeer_core.workermetrics import SigningMetrics

    metrics = SigningMetrics()
    timer = metrics.token_timer("ScheduleTestSigner")
    timer.observe(0.001)
    assert timer.samples == [] and not metrics._scheduled

    async def on_loop() -> None:
        timer.observe(0.001)
        assert metrics._scheduled and timer.samples == [0.001]
        timer.observe(0.002)
        metrics.flush()
        assert timer.samples == [] and not metrics._scheduled
        timer.samples.append(0.003)
        timer.appended(len(timer.samples))
        assert metrics._scheduled

    asyncio.run(on_loop())

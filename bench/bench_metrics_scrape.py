"""The cost of a ``/metrics`` scrape with many workers (default 10,000), in multiprocess mode.

Builds a data directory with N signers sharing one crypto worker's token (every one ACTIVE with
a certificate), records a signing request for every worker and outcome pair that a busy server
would have (success for all, a failure for one in ten) in prometheus_client's multiprocess
files, as ``serve --workers 2`` does, then renders the exposition the way ``GET /metrics`` does
(the event metrics of every process file plus the state collectors of the core and the
installed plugins). Prints the render time (median of 5) and the size in bytes and lines.

    .venv/bin/python bench/bench_metrics_scrape.py [--workers 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=10_000)
    parser.add_argument("--profile", action="store_true", help="print where one render spends its time (cProfile)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="signpeer-scrape-"))
    # Multiprocess mode must be on before prometheus_client makes its first metric.
    (tmp / "metrics").mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "metrics")

    from signpeer_core.certificates import encode_certificate_property
    from signpeer_core.metricsendpoint import metrics_registry
    from signpeer_core.testing import make_pki, open_services, write_home
    from signpeer_core.testing.home import MEMORY_TOKEN, PASSWORD

    pki = make_pki(tmp / "pki")
    home = write_home(tmp / "home", pki)
    services = open_services(home)
    store = services.store
    store.update_worker(1, {"NAME": "SharedToken", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
                            "CRYPTOTOKEN_IMPLEMENTATION_CLASS": MEMORY_TOKEN, "KEYSTOREPASSWORD": PASSWORD})
    services.runtime.load()
    token = services.runtime.get("SharedToken").token
    token.generate_key("shared", "ECDSA", "secp256r1")
    chain = encode_certificate_property([pki.issue_signer(token.public_key("shared"), "CN=Shared"), pki.ca_cert])
    t0 = time.perf_counter()
    for wid in range(2, args.workers + 2):
        store.update_worker(wid, {"NAME": f"Signer{wid:05d}", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "PlainSigner",
                                  "CRYPTOTOKEN": "SharedToken", "DEFAULTKEY": "shared", "AUTHTYPE": "NOAUTH",
                                  "SIGNERCERTCHAIN": chain})
    services.runtime.load()
    print(f"{args.workers} workers stored and loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    metrics = services.metrics
    assert metrics is not None
    started = time.perf_counter()
    for worker in services.runtime.workers()[1:]:
        metrics.done(worker, 200, started)
        if worker.id % 10 == 0:
            metrics.done(worker, 503, started)
    registry = metrics_registry(services)
    from prometheus_client import generate_latest

    # The render /metrics does, alternating with prometheus_client's own writer on the same
    # registry (the writer signpeer used before exposition.py): same bytes, CPU time of each.
    times, cpu, cpu_before = [], [], []
    body = b""
    for _ in range(5):
        t, c = time.perf_counter(), time.process_time()
        body = registry.render()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        c = time.process_time()
        before = generate_latest(registry.registry)
        cpu_before.append(time.process_time() - c)
        assert before == body, "exposition.write_text differs from prometheus_client's writer"
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(registry.render)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    lines = body.count(b"\n")
    print(f"scrape of {args.workers} workers (multiprocess mode): median {statistics.median(times) * 1000:.0f} ms "
          f"(runs: {', '.join(f'{x * 1000:.0f}' for x in times)}), {len(body) / 1e6:.2f} MB, {lines} lines "
          f"({lines / args.workers:.1f} per worker)")
    print(f"CPU per render: {statistics.median(cpu) * 1000:.0f} ms with exposition.write_text, "
          f"{statistics.median(cpu_before) * 1000:.0f} ms with prometheus_client.generate_latest "
          f"(ratio {statistics.median(cpu) / statistics.median(cpu_before):.2f}); load average "
          f"{os.getloadavg()[0]:.1f}")
    services.close()


if __name__ == "__main__":
    main()

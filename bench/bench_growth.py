#!/usr/bin/env python3
"""How the cost of everyday operations grows with the number of workers.

For each size (default 1, 1,000, 10,000; add 50,000 with ``--sizes``) a data directory gets that
many PlainSigner workers sharing one INTERNAL soft token (one key, one certificate: what grows is
the number of workers, not the crypto). Measured on each:

* ``serve`` start-up (process start to the first answered health check: wall time and the
  server's CPU time) and its resident memory after start, with the memory per worker;
* ``reload all`` and ``reload <one worker>``, ``getconfig <one worker>`` (by id and by name),
  ``setproperty <one worker>`` as the CLI runs them: the CLI process's CPU time (Python's own
  start-up and the plugins' import are the 1-worker figure) and, for the reloads, the CPU time
  the running server spent applying them (``reload`` returns once the server applied it);
* the REST worker listing (``GET /signserver/rest/v1/workers`` as the administrator, wall time).

CPU times, not wall times, are what to compare on a loaded machine. A single-worker operation
should cost the same at every size ("flat"); whole-set operations may grow linearly. The last
column gives the ratio of the largest size's figure to the smallest's.

    .venv/bin/python bench/bench_growth.py [--sizes 1,1000,10000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from signpeer_core import devpki  # noqa: E402
from signpeer_core.certificates import encode_certificate_property  # noqa: E402
from signpeer_core.testing import PASSWORD, ServerProcess, make_pki, open_services, write_home  # noqa: E402
from signpeer_core.testing.processes import _cpu_seconds, client_context, signpeer_cmd  # noqa: E402


def populate(home: Path, pki: Any, count: int) -> None:
    services = open_services(home)
    try:
        store = services.store
        store.update_worker(1, {"NAME": "SharedToken", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
                                "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "SoftCryptoToken", "KEYSTORETYPE": "INTERNAL",
                                "KEYSTOREPASSWORD": PASSWORD})
        services.runtime.load()
        services.runtime.get(1).token.generate_key("shared1", "ECDSA", "secp256r1")
        public = services.runtime.get(1).token.public_key("shared1")
        cert = devpki.issue(pki.ca_key, pki.ca_cert, "CN=Growth, O=bench", public)
        chain = encode_certificate_property([cert, pki.ca_cert])
        batch: dict[int, tuple[dict[str, str], list[str]]] = {}
        for wid in range(2, count + 2):
            batch[wid] = ({"NAME": f"Signer{wid}", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "PlainSigner",
                           "CRYPTOTOKEN": "SharedToken", "DEFAULTKEY": "shared1", "AUTHTYPE": "NOAUTH",
                           "SIGNERCERTCHAIN": chain}, [])
            if len(batch) == 5000:
                store.apply_changes(workers=batch)
                batch = {}
        if batch:
            store.apply_changes(workers=batch)
    finally:
        services.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cli_cpu(home: Path, *args: str, server_pid: int | None = None, runs: int = 3) -> tuple[float, float]:
    """Median CPU seconds of the CLI process running ``args``, and of the server meanwhile."""
    cli, server = [], []
    for _ in range(runs):
        before = os.times()
        server_before = _cpu_seconds(server_pid) if server_pid else 0.0
        done = subprocess.run(signpeer_cmd("--home", str(home), *args), capture_output=True, text=True, timeout=900,
                              check=False)
        after = os.times()
        server.append((_cpu_seconds(server_pid) - server_before) if server_pid else 0.0)
        cli.append(after.children_user + after.children_system - before.children_user - before.children_system)
        if done.returncode != 0:
            raise RuntimeError(f"signpeer {' '.join(args)} failed: {done.stderr}")
    return statistics.median(cli), statistics.median(server)


def listing_seconds(server: ServerProcess, home: Path, count: int) -> float:
    import httpx

    ctx = client_context(home / "tls" / "ca.pem", (str(home / "tls" / "admin.pem"), str(home / "tls" / "admin-key.pem")))
    times = []
    with httpx.Client(base_url=server.url, verify=ctx, timeout=600,
                      headers={"X-Keyfactor-Requested-With": "bench"}) as client:
        for _ in range(4):
            started = time.perf_counter()
            r = client.get("/signserver/rest/v1/workers")
            times.append(time.perf_counter() - started)
            r.raise_for_status()
    return statistics.median(times[1:])


def measure(base: Path, pki: Any, count: int) -> dict[str, float]:
    home = write_home(base / f"n{count}", pki, settings='log_level = "WARNING"\n')
    started = time.perf_counter()
    populate(home, pki, count)
    print(f"  {count:>6} workers: set up in {time.perf_counter() - started:.1f} s", flush=True)
    one = str(count // 2 + 2)  # a worker in the middle
    figures: dict[str, float] = {}
    startups, cpus, rss = [], [], []
    for _ in range(2):
        server = ServerProcess(home, (), None).start(timeout=1800)
        startups.append(server.startup_seconds)
        cpus.append(server.startup_cpu_seconds)
        assert server.proc is not None
        rss.append(rss_mb(server.proc.pid))
        if len(startups) < 2:
            server.stop()
    figures["start-up s"] = min(startups)
    figures["start-up CPU s"] = min(cpus)
    figures["RSS MB"] = min(rss)
    try:
        assert server.proc is not None
        pid = server.proc.pid
        figures["listing s"] = listing_seconds(server, home, count)
        figures["reload all CLI CPU s"], figures["reload all server CPU s"] = cli_cpu(home, "reload", "all",
                                                                                       server_pid=pid)
        figures["reload one CLI CPU s"], figures["reload one server CPU s"] = cli_cpu(home, "reload", one,
                                                                                       server_pid=pid)
        figures["getconfig id CPU s"] = cli_cpu(home, "getconfig", one)[0]
        figures["getconfig name CPU s"] = cli_cpu(home, "getconfig", f"Signer{one}")[0]
        figures["setproperty CPU s"] = cli_cpu(home, "setproperty", one, "GROWTH_MARK", "1")[0]
    finally:
        server.stop()
    print("    " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()), flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,1000,10000")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="signpeer-growth-") as tmp:
        base = Path(tmp)
        pki = make_pki(base / "pki")
        print("== growth with the number of workers (medians; CLI figures include Python's start-up)")
        for n in sizes:
            results[n] = measure(base, pki, n)
    small = sizes[0]
    names = list(results[small])
    print(f"\n{'what':<26}" + "".join(f"{n:>10}" for n in sizes) + "   growth (largest/smallest)")
    for name in names:
        row = [results[n][name] for n in sizes]
        low, high = max(row[0], 1e-3), max(row[-1], 1e-3)
        print(f"{name:<26}" + "".join(f"{v:>10.3f}" for v in row) + f"   x{high / low:.1f} for x{sizes[-1] / small:.0f} workers")
    if len(sizes) > 1:
        per_worker = (results[sizes[-1]]["RSS MB"] - results[small]["RSS MB"]) / (sizes[-1] - small) * 1024
        print(f"resident memory per worker: {per_worker:.1f} KiB")
    if args.json:
        Path(args.json).write_text(json.dumps({str(n): r for n, r in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

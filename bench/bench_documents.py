#!/usr/bin/env python3
"""Signing large documents over REST: throughput against openssl, and the server's peak memory.

For each document size (default 1 KiB, 1 MiB, 10 MiB, 100 MiB; ``--sizes`` in bytes, k/M
suffixes allowed) a random file is signed by one ``signpeer serve`` process (TLS on loopback,
``max_body_size`` raised above the largest size) with:

* PlainSigner (SHA256withECDSA, P-256) and CMSSigner attached and detached
  (``DETACHEDSIGNATURE=true``), each
* over the transports that exist: SignServer's REST JSON with the document base64-encoded
  (``POST /signserver/rest/v1/workers/{name}/process``), the multipart upload to the same path,
  and the raw body to ``POST /signserver/worker/{name}`` (the result comes back raw for these two).

Reported per case: MB/s of document (wall time of the whole request, client included, median),
the server's CPU seconds per request, and its peak resident memory during the request above
what it held idle (after its first, smallest request), as a multiple of the document size
(Linux: the peak is reset through ``/proc/PID/clear_refs`` before each request and read from
``VmHWM``; memory freed by earlier requests and not yet given back counts in it, so the figure
is an upper bound; target <= 3x). Beside them,
``openssl dgst -sha256 -sign`` and ``openssl cms -sign [-nodetach]`` on the same file with a key of
the same kind: the ratio is signpeer's MB/s over openssl's.

    .venv/bin/python bench/bench_documents.py [--sizes 1k,1M,10M,100M] [--only "CMS attached/raw,..."] [--json FILE]

``--only`` keeps the cases named ``signer/transport`` (a signer or transport alone keeps all of its cases).

The machine is shared: compare the ratios and the memory multiples, not the raw rates.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from signpeer_core.testing import ServerProcess, add_signer, make_pki, open_services, write_home  # noqa: E402
from signpeer_core.testing.processes import _cpu_seconds, client_context  # noqa: E402

SIGNERS = {"PlainSigner": ("PlainSigner", {"SIGNATUREALGORITHM": "SHA256withECDSA"}),
           "CMS attached": ("CMSSigner", {}),
           "CMS detached": ("CMSSigner", {"DETACHEDSIGNATURE": "true"})}
TRANSPORTS = ("json-base64", "multipart", "raw")


def parse_size(text: str) -> int:
    text = text.strip()
    scale = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}.get(text[-1:].lower(), 1)
    return int(text[:-1] if scale > 1 else text) * scale


def label(size: int) -> str:
    for unit, scale in (("MiB", 1024 ** 2), ("KiB", 1024)):
        if size >= scale:
            return f"{size // scale} {unit}"
    return f"{size} B"


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def runs_for(size: int) -> int:
    return 9 if size <= 64 * 1024 else 5 if size <= 2 * 1024 ** 2 else 3 if size <= 20 * 1024 ** 2 else 2


def timed(runs: int, call: Callable[[], None]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def openssl_rates(work: Path, document: Path, size: int) -> dict[str, float]:
    """MB/s of openssl on the same file, with a fresh P-256 key and a self-made certificate."""
    key = work / "openssl-key.pem"
    cert = work / "openssl-cert.pem"
    if not key.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-subj", "/CN=bench", "-days", "2"],
                       check=True, capture_output=True)
    out = work / "openssl.out"
    commands = {
        "PlainSigner": ["openssl", "dgst", "-sha256", "-sign", str(key), "-out", str(out), str(document)],
        "CMS attached": ["openssl", "cms", "-sign", "-binary", "-nodetach", "-in", str(document), "-signer",
                         str(cert), "-inkey", str(key), "-outform", "DER", "-out", str(out)],
        "CMS detached": ["openssl", "cms", "-sign", "-binary", "-in", str(document), "-signer", str(cert),
                         "-inkey", str(key), "-outform", "DER", "-out", str(out)],
    }
    return {name: size / 1e6 / timed(runs_for(size), lambda c=cmd: subprocess.run(c, check=True))  # type: ignore[misc]
            for name, cmd in commands.items()}


def request(client: httpx.Client, transport: str, worker: str, document: Path) -> bytes:
    """One signing request of ``document``; the result bytes."""
    if transport == "json-base64":
        body = b'{"encoding":"BASE64","data":"' + base64.b64encode(document.read_bytes()) + b'"}'
        r = client.post(f"/signserver/rest/v1/workers/{worker}/process", content=body,
                        headers={"Content-Type": "application/json"})
        r.raise_for_status()
        return base64.b64decode(r.json()["data"])
    if transport == "multipart":
        with document.open("rb") as f:
            r = client.post(f"/signserver/rest/v1/workers/{worker}/process", files={"file": ("document", f)})
    else:
        with document.open("rb") as f:
            r = client.post(f"/signserver/worker/{worker}", content=f,
                            headers={"Content-Type": "application/octet-stream",
                                     "Content-Length": str(document.stat().st_size)})
    r.raise_for_status()
    return r.content


def selected(signer: str, transport: str, only: list[str] | None) -> bool:
    return not only or any(o in (signer, transport, f"{signer}/{transport}") for o in only)


def measure(base: Path, sizes: list[int], only: list[str] | None = None) -> dict[str, Any]:
    pki = make_pki(base / "pki")
    home = write_home(base / "home", pki, settings=f'max_body_size = {max(sizes) * 2 + 1024 * 1024}\n'
                                                    'log_level = "WARNING"\n')
    services = open_services(home)
    try:
        for name, (impl, props) in SIGNERS.items():
            add_signer(services, pki, name.replace(" ", ""), implementation=impl, AUTHTYPE="NOAUTH", **props)
    finally:
        services.close()
    server = ServerProcess(home, (), None).start(timeout=300)
    assert server.proc is not None
    pid = server.proc.pid
    can_reset = reset_peak(pid)
    idle_kb = 0
    results: dict[str, Any] = {"cases": []}
    try:
        ctx = client_context(pki.ca_pem)
        with httpx.Client(base_url=server.url, verify=ctx, timeout=600,
                          headers={"X-Keyfactor-Requested-With": "bench"}) as client:
            for size in sizes:
                document = base / f"doc-{size}"
                document.write_bytes(os.urandom(size))
                openssl = openssl_rates(base, document, size)
                for signer in SIGNERS:
                    worker = signer.replace(" ", "")
                    for transport in TRANSPORTS:
                        if not selected(signer, transport, only):
                            continue
                        request(client, transport, worker, document)  # warm: caches, first allocation
                        if not idle_kb:  # the server's resident memory after one small request
                            idle_kb = status_kb(pid, "VmRSS")
                        runs = runs_for(size)
                        walls, cpus, peaks = [], [], []
                        for _ in range(runs):
                            reset_peak(pid)
                            cpu = _cpu_seconds(pid)
                            started = time.perf_counter()
                            request(client, transport, worker, document)
                            walls.append(time.perf_counter() - started)
                            cpus.append(_cpu_seconds(pid) - cpu)
                            peaks.append(max(0, status_kb(pid, "VmHWM") - idle_kb) * 1024)
                        wall = statistics.median(walls)
                        case = {"size": size, "signer": signer, "transport": transport,
                                "mb_s": size / 1e6 / wall, "openssl_mb_s": openssl[signer],
                                "server_cpu_s": statistics.median(cpus),
                                "peak_x": (statistics.median(peaks) / size) if can_reset else float("nan"),
                                "peak_mb": statistics.median(peaks) / 1e6}
                        results["cases"].append(case)
                        print(f"  {label(size):>8} {signer:<13} {transport:<12} {case['mb_s']:9.2f} MB/s "
                              f"(openssl {case['openssl_mb_s']:8.2f}, x{case['mb_s'] / case['openssl_mb_s']:.2f}); "
                              f"server CPU {case['server_cpu_s'] * 1000:8.1f} ms; peak +{case['peak_mb']:8.1f} MB "
                              f"= {case['peak_x']:.1f}x the document", flush=True)
                document.unlink()
    finally:
        server.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1k,1M,10M,100M")
    parser.add_argument("--only", default="", help='cases to run, e.g. "CMS attached/raw,json-base64"')
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    only = [o.strip() for o in args.only.split(",") if o.strip()]
    print(f"== large documents over REST (one server process; load average {os.getloadavg()[0]:.1f})")
    with tempfile.TemporaryDirectory(prefix="signpeer-documents-") as tmp:
        results = measure(Path(tmp), sizes, only)
    print(f"\n{'size':>8} {'signer':<13} {'transport':<12} {'MB/s':>9} {'x openssl':>9} {'peak':>6}")
    for c in results["cases"]:
        print(f"{label(c['size']):>8} {c['signer']:<13} {c['transport']:<12} {c['mb_s']:9.2f} "
              f"{c['mb_s'] / c['openssl_mb_s']:9.2f} {c['peak_x']:5.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""REST signing throughput over HTTPS with kept-alive connections, against a trivial Starlette app.

What it measures, in one run (so the machine's noise hits every server alike):

1. ``signpeer serve`` start-up: process start to the first answered HTTPS request (median of 3).
2. Baseline: a trivial Starlette endpoint (reads the body, answers ``{"ok": true}``) served by
   uvicorn with the settings ``signpeer serve`` uses (mTLS protocol class, CERT_OPTIONAL with the
   client CA, httptools, keep-alive, no access log).
3. ``POST /signserver/rest/v1/workers/PlainSigner/process`` (EC P-256 soft key, 1 KiB payload,
   BASE64 encoding, ``AUTHTYPE=NOAUTH``), one server process with the worker log on (the default);
   ratio against the baseline (target >= 0.5).
4. The same held on one CPU (``serve --cpu-affinity auto``).
5. The same with the worker log off, and with ``--workers 2`` (not with ``--quick``).

Every server runs from the start and the runs go round them in turn. Two load generators, each
against every server:

* ``python``: a small asyncio client speaking raw HTTP/1.1 with keep-alive and a TLS client
  certificate (mutual TLS);
* ``wrk`` (Debian's package; ``scripts/system-deps.sh``): a native load generator, one thread,
  TLS without a client certificate (wrk cannot present one), the POST body from a Lua script
  written at run time (``bench/wrkload.py``). Without wrk the bench says so and uses the Python
  client only.

On a 2-core machine the client competes with the server for CPU, so "server CPU ms/request"
(from /proc, independent of the client) is printed too; the two clients' rates side by side show
what the Python client's own cost takes from the server.

    .venv/bin/python bench/bench_rest.py [--seconds 5] [--connections 16] [--runs 3] [--quick]
                                         [--client both|python|wrk] [--compare CHECKOUT]

Printed per client: each server's median rate and server CPU per request over the rounds, the
ratios of those medians (signing / baseline: the target), and the same ratios taken round by
round (both servers measured within seconds of each other) with their median and range, which
the machine's slower swings move less. ``--quick`` makes 5 rounds of 4 s (3 of 5 s otherwise).

``--compare CHECKOUT`` also runs the server of another checkout (e.g. ``git worktree add --detach
../before main``), interleaved with this one's: before/after figures under the same load.

``--metrics`` measures only what the metrics cost the signing path: servers with metrics on
and off (``SIGNPEER_METRICS``), one process and two (multiprocess mode: memory-mapped files)
(target: metrics cost under 3 % of the rate). ``--tracing`` does the same for OpenTelemetry
traces: the extra hidden from the server (as if not installed), installed with ``tracing =
"off"``, and ``tracing = "otlp"`` sending every request's spans to a receiver on loopback.

Both compare modes precisely on a loaded machine (:func:`compare_modes`): one server per mode runs
the whole time, and in each of many short rounds (``--rounds`` of ``--seconds``) every server is
loaded at once by the same client (the connections split between them), so that whatever else
the machine does in those seconds weighs on every mode alike. What counts is the
server's own CPU time per request, read with nanosecond resolution from the kernel's per-process
CPU clocks (``clock_getcpuclockid``: every thread, exited ones included) right after warm-up and
at the end of each run: it does not depend on how fast the client (on the same 2 cores) drives
the server. Printed per mode: the median over the runs and the spread (interquartile range and
min–max), and per compared mode the median of the per-round ratios against the reference mode
(each round measures every mode over the same seconds) with its interquartile range.

    .venv/bin/python bench/bench_rest.py --metrics [--rounds 12] [--seconds 1.5]
    .venv/bin/python bench/bench_rest.py --tracing [--rounds 12] [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ctypes
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import wrkload  # noqa: E402  (bench/wrkload.py, beside this script)
from rawhttp import read_response  # noqa: E402  (bench/rawhttp.py, beside this script)

from signpeer_core.testing import ServerProcess, add_signer, make_pki, open_services, write_home  # noqa: E402

PROCESS = "/signserver/rest/v1/workers/PlainSigner/process"


# -- baseline server (run as a subprocess of this script) -----------------------------------------

def run_baseline_server(home: str, port_file: str) -> None:
    import socket

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from signpeer_core.mtls import MTLSHttpToolsProtocol

    async def ok(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/json", ok, methods=["POST"])])
    tls = Path(home) / "tls"
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    Path(port_file).write_text(str(sock.getsockname()[1]))
    config = uvicorn.Config(app, http=MTLSHttpToolsProtocol, ssl_certfile=str(tls / "server.pem"),
                            ssl_keyfile=str(tls / "server-key.pem"), ssl_cert_reqs=ssl.CERT_OPTIONAL,
                            ssl_ca_certs=str(tls / "client-ca.pem"), timeout_keep_alive=75, access_log=False,
                            log_level="warning", server_header=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


# -- load generator ----------------------------------------------------------------------------

async def _connection(host: str, port: int, ctx: ssl.SSLContext, request: bytes, stop_at: float,
                      latencies: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            writer.write(request)
            status, body = await read_response(reader)
            latencies.append(time.perf_counter() - t0)
            if status != b"200":
                errors.append(f"{status.decode()} {body[:200]!r}")
                return
    finally:
        writer.close()


async def _load(host: str, port: int, ctx: ssl.SSLContext, request: bytes, seconds: float,
                connections: int) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    errors: list[str] = []
    # Warm-up: handshakes and first requests are not part of the steady state.
    await asyncio.gather(*[_connection(host, port, ctx, request, time.perf_counter() + 0.3, [], errors)
                           for _ in range(connections)])
    start = time.perf_counter()
    await asyncio.gather(*[_connection(host, port, ctx, request, start + seconds, latencies, errors)
                           for _ in range(connections)])
    return latencies, errors, time.perf_counter() - start


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return total


def server_pids(root_pid: int) -> list[int]:
    """The process and its children (uvicorn workers)."""
    pids = [root_pid]
    try:
        children = Path(f"/proc/{root_pid}/task/{root_pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    return pids


def run_python_client(port: int, ctx: ssl.SSLContext, request: bytes, seconds: float, connections: int,
                      pid: int) -> dict[str, float]:
    """One run of the Python client against the server on ``port`` (process ``pid``)."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    cpu = ServerCpu(pid)
    cpu0 = cpu.read()
    latencies, errors, elapsed = runner(_load("127.0.0.1", port, ctx, request, seconds, connections))
    cpu1 = cpu.read()
    if errors:
        raise SystemExit(f"errors: {errors[:3]}")
    latencies.sort()
    return {"rate": len(latencies) / elapsed, "p50": latencies[len(latencies) // 2] * 1000,
            "p99": latencies[int(len(latencies) * 0.99)] * 1000, "cpu": (cpu1 - cpu0) * 1000 / len(latencies)}


def run_wrk(port: int, path: str, body: bytes, seconds: float, connections: int, pid: int) -> dict[str, float]:
    """One run of wrk (no client certificate) against the server on ``port`` (process ``pid``)."""
    wrkload.run(f"https://127.0.0.1:{port}{path}", body, 1, connections)  # warm-up: handshakes, first requests
    cpu = ServerCpu(pid)
    cpu0 = cpu.read()
    result = wrkload.run(f"https://127.0.0.1:{port}{path}", body, seconds, connections)
    cpu1 = cpu.read()
    return {**result, "cpu": (cpu1 - cpu0) * 1000 / result["requests"]}


@dataclass
class Target:
    """A server under measurement and the figures of its runs, per client."""

    name: str
    port: int
    pid: int
    path: str
    runs: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def median(self, client: str, key: str = "rate") -> float:
        return statistics.median(r[key] for r in self.runs[client])


def summary(target: Target, client: str) -> str:
    rates = ", ".join(f"{r['rate']:.0f}" for r in target.runs[client])
    return (f"{target.name:<40} {client:<6} {target.median(client):>7.0f} req/s   p50 {target.median(client, 'p50'):6.2f} ms"
            f"   p99 {target.median(client, 'p99'):6.2f} ms   server CPU {target.median(client, 'cpu'):.3f} ms/req"
            f"   (runs: {rates})")


def round_ratios(target: Target, reference: Target, client: str, key: str) -> list[float]:
    """``key`` of ``target`` over ``reference`` in each round: both measured within seconds of
    each other, so the machine's slower swings (other work starting and stopping) cancel out."""
    return [t[key] / r[key] for t, r in zip(target.runs[client], reference.runs[client], strict=True)]


def _spread(values: list[float]) -> str:
    return (f"median {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f}, "
            f"{len(values)} rounds)")


def http_request(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"X-Keyfactor-Requested-With: bench\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def checkout_env(checkout: Path | None) -> dict[str, str]:
    """``PYTHONPATH`` that makes a ``signpeer serve`` subprocess run the code of another checkout
    (its core and its plugins ahead of this virtualenv's editable installs)."""
    if checkout is None:
        return {}
    paths = [str(checkout)] + [str(p) for p in sorted(checkout.glob("plugins/*/src"))]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def start_baseline(home: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = tmp / "baseline.port"
    baseline = subprocess.Popen([sys.executable, __file__, "--baseline-server", str(home), str(port_file)])
    deadline = time.monotonic() + 15
    while not port_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    return baseline, int(port_file.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None, help="seconds per run (5; 4 with --quick; 1.5 with --metrics/--tracing)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--runs", type=int, default=None, help="rounds over every server (5 with --quick, else 3)")
    parser.add_argument("--quick", action="store_true",
                        help="only the baseline and one process with the worker log on (no start-up, log off, "
                             "2 processes)")
    parser.add_argument("--client", choices=("both", "python", "wrk"), default="both")
    parser.add_argument("--compare", type=Path, metavar="CHECKOUT",
                        help="also measure the server of another checkout (e.g. a worktree of main), "
                             "interleaved with this one's: before/after under the same load")
    parser.add_argument("--metrics", action="store_true", help="only compare metrics on and off")
    parser.add_argument("--tracing", action="store_true",
                        help="only compare tracing not installed, off, and on (OTLP to a local receiver)")
    parser.add_argument("--rounds", type=int, default=12, help="--metrics/--tracing: runs per mode")
    parser.add_argument("--baseline-server", nargs=2, metavar=("HOME", "PORTFILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 1.5 if args.metrics or args.tracing else 4.0 if args.quick else 5.0
    if args.runs is None:
        args.runs = 5 if args.quick else 3
    if args.baseline_server:
        run_baseline_server(*args.baseline_server)
        return

    tmp = Path(tempfile.mkdtemp(prefix="signpeer-bench-"))
    pki = make_pki(tmp / "pki")
    home = write_home(tmp / "home", pki)
    services = open_services(home)
    add_signer(services, pki, "PlainSigner", keyalg="ECDSA", keyspec="secp256r1", AUTHTYPE="NOAUTH")
    services.close()
    ctx = ssl.create_default_context(cafile=str(pki.ca_pem))
    ctx.load_cert_chain(*pki.client.pair)
    payload = os.urandom(1024)
    body = json.dumps({"data": base64.b64encode(payload).decode(), "encoding": "BASE64"}).encode()
    clients = ["python", "wrk"] if args.client == "both" else [args.client]
    if "wrk" in clients and wrkload.available() is None:
        print("wrk is not installed (Debian: apt-get install wrk): measuring with the Python client only\n")
        clients.remove("wrk")
    if not clients:
        raise SystemExit("no load generator left to measure with")
    print(f"signpeer REST benchmark: {args.connections} kept-alive connections, {args.seconds:g} s x "
          f"{args.runs} runs, 1 KiB payload ({len(body)} byte JSON body), {os.cpu_count()} CPUs; clients: "
          f"{' and '.join(clients)} (python: mTLS with a client certificate; wrk: TLS, no client certificate, "
          f"1 thread)\n", flush=True)

    if args.metrics:
        compare_metrics(home, ctx, http_request(PROCESS, body), args)
        return
    if args.tracing:
        compare_tracing(home, ctx, http_request(PROCESS, body), args)
        return

    if not args.quick:
        startups = []
        for _ in range(3):
            server = ServerProcess(home, (), None).start()
            startups.append(server.startup_seconds)
            server.stop()
        print(f"signpeer serve start-up to first answer: median {statistics.median(startups):.2f} s "
              f"(runs: {', '.join(f'{s:.2f}' for s in startups)}; target < 2 s)\n", flush=True)

    # Every server runs from the start; the runs go round them in turn, so that the machine's
    # load (shared, noisy) hits each alike. An idle server costs next to nothing.
    baseline, base_port = start_baseline(home, tmp)
    servers: list[ServerProcess] = []
    targets = [Target("baseline Starlette POST /json", base_port, baseline.pid, "/json")]

    def add(name: str, serve_args: tuple[str, ...], env: dict[str, str]) -> None:
        server = ServerProcess(home, serve_args, env).start()
        servers.append(server)
        targets.append(Target(name, server.port, server.proc.pid, PROCESS))

    try:
        add("PlainSigner P-256, 1 process, log on", (), {})
        add("PlainSigner P-256, 1 process, log on, --cpu-affinity auto", ("--cpu-affinity", "auto"), {})
        if args.compare:
            add(f"before ({args.compare}), log on", (), checkout_env(args.compare.resolve()))
        if not args.quick:
            add("PlainSigner P-256, 1 process, log off", (), {"SIGNPEER_LOG_LEVEL": "WARNING"})
            add("PlainSigner P-256, 2 processes, log off", ("--workers", "2"), {"SIGNPEER_LOG_LEVEL": "WARNING"})
            time.sleep(1.0)  # let both children finish starting
        for run in range(args.runs):
            shift = run % len(targets)
            for target in targets[shift:] + targets[:shift]:
                for client in clients:
                    if client == "python":
                        figures = run_python_client(target.port, ctx, http_request(target.path, body), args.seconds,
                                                    args.connections, target.pid)
                    else:
                        figures = run_wrk(target.port, target.path, body, args.seconds, args.connections, target.pid)
                    target.runs.setdefault(client, []).append(figures)
            print(f"run {run + 1} of {args.runs} done", flush=True)
    finally:
        for server in servers:
            server.stop()
        baseline.terminate()
        baseline.wait(10)

    print()
    for target in targets:
        for client in clients:
            print(summary(target, client))
    print()
    base, signing = targets[0], targets[1]
    for client in clients:
        print(f"[{client}] ratio signing / baseline (1 process, worker log on): "
              f"{signing.median(client) / base.median(client):.2f}  (target >= 0.50)")
        print(f"[{client}] server CPU per request, signing / baseline:          "
              f"{signing.median(client, 'cpu') / base.median(client, 'cpu'):.2f}")
        print(f"[{client}] per round (baseline and signing in the same round): rate ratio "
              f"{_spread(round_ratios(signing, base, client, 'rate'))}; server CPU ratio "
              f"{_spread(round_ratios(signing, base, client, 'cpu'))}")
        for target in targets[2:]:
            print(f"[{client}] ratio {target.name} / baseline: {target.median(client) / base.median(client):.2f}")
        if args.compare:
            before = targets[2]
            print(f"[{client}] after / before: rate {signing.median(client) / before.median(client):.2f}, server CPU "
                  f"per request {signing.median(client, 'cpu') / before.median(client, 'cpu'):.2f}; per round: "
                  f"server CPU {_spread(round_ratios(signing, before, client, 'cpu'))}")
            print(f"[{client}] before / baseline per round: rate ratio {_spread(round_ratios(before, base, client, 'rate'))}"
                  f"; server CPU ratio {_spread(round_ratios(before, base, client, 'cpu'))}")
    if len(clients) == 2:
        for target in targets[:2]:
            print(f"{target.name}: rate wrk / python {target.median('wrk') / target.median('python'):.2f} "
                  f"(what the Python client's own CPU takes from the server on this machine)")


_RECORDER_LOOP = """
import asyncio, os, sys, time
sys.path.insert(0, {root!r})
from signpeer_core.workermetrics import SigningMetrics
m = SigningMetrics()
class W:
    name = type_name = "PlainSigner"
w, timer, n = W(), m.token_timer("PlainSigner"), 200_000
async def main():
    best = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            s = time.perf_counter()
            m.done(w, 200, s)
            timer.observe(0.0001)
        spent = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(n):
            s = time.perf_counter()
        best.append((spent - (time.perf_counter() - t)) / n)
    m.flush()
    print(min(best) * 1e6)
asyncio.run(main())
"""


def recorder_cost() -> float:
    """Microseconds the signing path spends on metrics per request (a loop over what the pipeline
    and a signer call), in multiprocess mode as under ``--workers N``."""
    with tempfile.TemporaryDirectory() as directory:
        out = subprocess.run([sys.executable, "-c", _RECORDER_LOOP.format(root=str(ROOT))], check=True,
                             capture_output=True, text=True, env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory})
    return float(out.stdout.strip())


# -- precise A/B comparison of server modes -----------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def cpu_clock(pid: int) -> int | None:
    """The kernel's CPU-time clock of process ``pid`` (all its threads), or None."""
    clock = ctypes.c_int()
    return clock.value if _libc.clock_getcpuclockid(pid, ctypes.byref(clock)) == 0 else None


class ServerCpu:
    """CPU seconds a server (its processes) used so far, at nanosecond resolution where the
    kernel allows (else /proc clock ticks)."""

    def __init__(self, root_pid: int) -> None:
        self.pids = server_pids(root_pid)
        clocks = [cpu_clock(pid) for pid in self.pids]
        self.clocks = None if None in clocks else clocks

    def read(self) -> float:
        if self.clocks is not None:
            return sum(time.clock_gettime(c) for c in self.clocks)  # type: ignore[union-attr]
        return cpu_seconds(self.pids)


async def _timed_load(port: int, ctx: ssl.SSLContext, request: bytes, seconds: float, connections: int,
                      cpu: ServerCpu) -> tuple[int, float, float]:
    """Warm connections, then ``seconds`` of load: (requests, wall seconds, server CPU seconds)."""
    opened = [await asyncio.open_connection("127.0.0.1", port, ssl=ctx) for _ in range(connections)]
    count = 0
    errors: list[str] = []

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(request)
        status, body = await read_response(reader)
        if status != b"200":
            errors.append(f"{status.decode()} {body[:200]!r}")

    async def loop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stop_at: float) -> None:
        nonlocal count
        while time.perf_counter() < stop_at and not errors:
            await one(reader, writer)
            count += 1

    try:
        for _ in range(5):  # warm-up: first requests of each connection are not the steady state
            await asyncio.gather(*[one(r, w) for r, w in opened])
        cpu0, start = cpu.read(), time.perf_counter()
        await asyncio.gather(*[loop(r, w, start + seconds) for r, w in opened])
        elapsed, cpu1 = time.perf_counter() - start, cpu.read()
    finally:
        for _, w in opened:
            w.close()
    if errors:
        raise SystemExit(f"errors: {errors[:3]}")
    return count, elapsed, cpu1 - cpu0


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def compare_modes(title: str, modes: dict[str, tuple[Path, tuple[str, ...], dict[str, str]]], ctx: ssl.SSLContext,
                  request: bytes, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Start one server per mode (``name -> (home, serve args, environment)``), then
    ``args.rounds`` rounds; each round loads every server at once for ``args.seconds``.
    The first mode is the reference. Returns per mode: median CPU µs/request and rate, and the
    median per-round CPU ratio against the reference."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    servers: dict[str, tuple[ServerProcess, ServerCpu]] = {}
    names = list(modes)
    cpu: dict[str, list[float]] = {n: [] for n in names}
    rate: dict[str, list[float]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names[1:]}
    try:
        for name, (home, serve_args, env) in modes.items():
            server = ServerProcess(home, serve_args, {"SIGNPEER_LOG_LEVEL": "WARNING", **env}).start()
            if serve_args:
                time.sleep(1.5)  # let every process finish starting before reading their pids
            servers[name] = (server, ServerCpu(server.proc.pid))
        per_mode = max(1, args.connections // len(names))
        for _ in range(args.rounds):
            # Every mode under load at the same time, over the same seconds: whatever else the
            # machine does then weighs on all of them alike.
            async def together() -> list[tuple[int, float, float]]:
                return await asyncio.gather(*[_timed_load(servers[n][0].port, ctx, request, args.seconds, per_mode,
                                                          servers[n][1]) for n in names])

            this: dict[str, float] = {}
            for name, (count, elapsed, used) in zip(names, runner(together()), strict=True):
                this[name] = used / count * 1e6
                cpu[name].append(this[name])
                rate[name].append(count / elapsed)
            for name in names[1:]:
                ratios[name].append(this[name] / this[names[0]])
    finally:
        for server, _ in servers.values():
            server.stop()
    load = os.getloadavg()
    print(f"{title}: {args.rounds} rounds of {args.seconds:g} s, every mode loaded at once ({per_mode} connections "
          f"each), load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    out: dict[str, dict[str, float]] = {}
    for name in names:
        q1, med, q3 = _quartiles(cpu[name])
        line = (f"  {name:<28} server CPU {med:7.1f} us/req (IQR {q1:.1f}-{q3:.1f}, min-max {min(cpu[name]):.1f}-"
                f"{max(cpu[name]):.1f})   rate {statistics.median(rate[name]):6.0f} req/s")
        out[name] = {"cpu_us": med, "rate": statistics.median(rate[name])}
        if name in ratios:
            r1, rmed, r3 = _quartiles(ratios[name])
            out[name]["ratio"] = rmed
            line += f"   CPU/req vs {names[0]}: {rmed:.3f} (IQR {r1:.3f}-{r3:.3f}) = {(rmed - 1) * 100:+.1f} %"
        print(line, flush=True)
    print()
    return out


def _home_copy(home: Path, name: str) -> Path:
    """A copy of ``home`` for one mode's server (each server keeps its own run/ directory)."""
    target = home.parent / f"home-{name}"
    if not target.exists():
        shutil.copytree(home, target, ignore=shutil.ignore_patterns("run", "*.log"))
    return target


def compare_metrics(home: Path, ctx: ssl.SSLContext, request: bytes, args: argparse.Namespace) -> None:
    """Metrics off (reference) against on, one process and two; then the metrics' own cost per
    request in a loop against the server CPU a request takes."""
    off_cpus: list[float] = []
    for processes in (1, 2):
        serve_args = ("--workers", str(processes)) if processes > 1 else ()
        result = compare_modes(f"metrics, {processes} process(es)", {
            "metrics off": (_home_copy(home, f"off{processes}"), serve_args, {"SIGNPEER_METRICS": "false"}),
            "metrics on": (_home_copy(home, f"on{processes}"), serve_args, {"SIGNPEER_METRICS": "true"}),
        }, ctx, request, args)
        off_cpus.append(result["metrics off"]["cpu_us"])
    cost = recorder_cost()
    cpu_us = statistics.median(off_cpus)
    print(f"metrics on the signing path: {cost:.2f} us per request (best of 3 loops of 200,000, multiprocess mode) "
          f"= {cost / cpu_us * 100:.2f} % of the {cpu_us:.0f} us of server CPU a request takes with metrics off "
          f"(target < 3 %)")


_HIDE_OPENTELEMETRY = """import sys


class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by bench_rest.py)", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
"""


def compare_tracing(home: Path, ctx: ssl.SSLContext, request: bytes, args: argparse.Namespace) -> None:
    """The extra hidden (reference), installed but off, and on with every request traced."""
    from signpeer_core.testing.otlp import OtlpReceiver

    hidden = home.parent / "no-opentelemetry"
    hidden.mkdir(exist_ok=True)
    (hidden / "sitecustomize.py").write_text(_HIDE_OPENTELEMETRY)
    pythonpath = os.pathsep.join(p for p in (str(hidden), os.environ.get("PYTHONPATH", "")) if p)
    with OtlpReceiver(keep=False) as receiver:
        for processes in (1, 2):
            serve_args = ("--workers", str(processes)) if processes > 1 else ()
            compare_modes(f"tracing, {processes} process(es)", {
                "not installed": (_home_copy(home, f"none{processes}"), serve_args,
                                  {"PYTHONPATH": pythonpath, "SIGNPEER_TRACING": "off"}),
                "installed, tracing off": (_home_copy(home, f"off{processes}"), serve_args,
                                           {"SIGNPEER_TRACING": "off"}),
                "tracing on, ratio 0.1": (_home_copy(home, f"tenth{processes}"), serve_args,
                                          {"SIGNPEER_TRACING": "otlp", "SIGNPEER_TRACING_ENDPOINT": receiver.url,
                                           "SIGNPEER_TRACING_SAMPLE_RATIO": "0.1"}),
                "tracing on, every request": (_home_copy(home, f"on{processes}"), serve_args,
                                              {"SIGNPEER_TRACING": "otlp", "SIGNPEER_TRACING_ENDPOINT": receiver.url}),
            }, ctx, request, args)
        print(f"the receiver took {receiver.requests} OTLP export requests ({receiver.span_count} spans)")


if __name__ == "__main__":
    main()

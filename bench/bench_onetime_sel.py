"""One-time CMS signing end to end over HTTPS, against the in-process one-time cycle.

Path measured (issue 5): client --HTTPS keep-alive--> CMSSigner --> OneTimeCryptoWorker (EC
P-256 session-object keys in SoftHSM2) --> RA queue (SQLite, or PostgreSQL with ``--database
postgresql``: a throw-away server started as the tests start one) --> ``signpeer ra serve`` (a
separate process, long polls over mutual TLS) --> issue --> sign --> delete.

Baseline, same run and same token: the in-process cycle with the local CA connector (keygen,
CSR, issue, sign, delete; no HTTP, no queue), one request at a time. The ratio of the two
throughputs is what the HTTP and RA machinery costs.

Also: RSA-2048 one-time keys at a modest, steady request rate, without and with a key pool
(``KEYPOOL_SIZE``), p50 latency compared.

Bars: >= 100 signatures/s and p50 <= 25 ms end to end.
Usage: python bench/bench_onetime.py [--seconds 10] [--concurrency 4,8] [--pool-size 8] [--rsa-requests 20]
       [--server-workers 1] [--skip-rsa] [--database sqlite|postgresql|URL] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from proccpu import tree_cpu  # bench/proccpu.py, beside this script
from rawhttp import read_response  # bench/rawhttp.py, beside this script

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
LABEL, PIN = "onetimebench", "1234"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(x: float) -> str:
    return f"{x * 1000:.2f}"


# -- set-up ------------------------------------------------------------------------------------------

def make_token(root: Path) -> str:
    (root / "tokens").mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", LABEL, "--pin", PIN, "--so-pin", "5678"],
                   check=True, capture_output=True, env={**os.environ, "SOFTHSM2_CONF": str(conf)})
    return str(conf)


def configure(home: Path, pki: Any, ca_peer: Any, pool_size: int, ec_pool_size: int = 0,
              max_waiting: int | None = None) -> None:
    from signpeer_core import devpki
    from signpeer_core.clientrules import ClientRule, serialize_rules
    from signpeer_core.testing import open_services

    devpki.write_public(home / "ca.pem", devpki.cert_pem(pki.ca_cert))
    devpki.write_private(home / "ca-key.pem", devpki.key_pem(pki.ca_key))
    services = open_services(home)
    store = services.store
    store.update_global({"GLOB.PEERS_INCOMING_ENABLED": "true",
                         "GLOB.WSPEERS": serialize_rules([ClientRule.for_certificate(ca_peer.cert)])})
    store.update_worker(1, {"NAME": "HSM", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
                            "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "PKCS11CryptoToken", "SHAREDLIBRARY": MODULE,
                            "SLOTLABELTYPE": "TOKEN_LABEL", "SLOTLABELVALUE": LABEL, "PIN": PIN})
    ra = {"IMPLEMENTATION_CLASS": "OneTimeCryptoWorker", "CRYPTOTOKEN": "HSM",
          "CACONNECTOR_IMPLEMENTATION": "PeersRAConnector", "CANAME": "BenchCA", "ENDENTITYPROFILE": "EMPTY",
          "CERTIFICATEPROFILE": "ENDUSER", "USERNAME_PATTERN": "onetime-${transactionId}",
          "SUBJECTDN_PATTERN": "CN=${username},UID=${transactionId},O=signpeer bench", "CACONNECTOR_WAITTIMEOUT": "30"}
    workers = {
        2: {"NAME": "OneTimeEC", "KEYALG": "ECDSA", "KEYSPEC": "secp256r1", "KEYPOOL_SIZE": str(ec_pool_size), **ra,
            **({"MAX_WAITING": str(max_waiting)} if max_waiting is not None else {})},
        4: {"NAME": "OneTimeRSA", "KEYALG": "RSA", "KEYSPEC": "2048", **ra},
        6: {"NAME": "OneTimeRSAPool", "KEYALG": "RSA", "KEYSPEC": "2048", "KEYPOOL_SIZE": str(pool_size), **ra},
        8: {"NAME": "OneTimeLocal", "KEYALG": "ECDSA", "KEYSPEC": "secp256r1", **ra,
            "CACONNECTOR_IMPLEMENTATION": "LocalCAConnector", "CACERTIFICATE_FILE": "ca.pem", "CAKEY_FILE": "ca-key.pem"},
    }
    for wid, props in workers.items():
        store.update_worker(wid, props)
        store.update_worker(wid + 1, {"NAME": props["NAME"].replace("OneTime", "Signer"), "TYPE": "PROCESSABLE",
                                      "IMPLEMENTATION_CLASS": "CMSSigner", "CRYPTOTOKEN": props["NAME"],
                                      "AUTHTYPE": "USERNAME", "ACCEPT_ALL_USERNAMES": "true"})
    services.close()


# -- in-process baseline -------------------------------------------------------------------------------

def in_process_cycle(home: Path, count: int) -> dict[str, Any]:
    """The one-time cycle with no HTTP and no queue: SignerLocal -> OneTimeLocal (local CA)."""
    from signpeer_core.testing import open_services
    from signpeer_core.workers import SignRequest
    from signpeer_onetimecrypto.worker import close_pools

    services = open_services(home)
    try:
        signer = services.runtime.get("SignerLocal")
        onetime = services.runtime.get("OneTimeLocal")
        assert signer.status().active, signer.status().reasons
        totals: list[float] = []

        async def run() -> None:
            for i in range(count + 50):
                t0 = time.perf_counter()
                await signer.process(SignRequest(data=b"x" * 1024, request_id=f"base{i}", username="bench"))
                if i >= 50:
                    totals.append(time.perf_counter() - t0)

        asyncio.run(run())
        stats = {k: list(v)[-count:] for k, v in onetime.stats.samples.items()}
        stages = {k: statistics.median(v) for k, v in stats.items()}
        stages["sign (rest)"] = statistics.median(totals) - sum(stages.values())
        return {"count": count, "rate": count / sum(totals), "p50": pct(totals, 0.5), "p99": pct(totals, 0.99),
                "stages": stages}
    finally:
        close_pools()
        services.close()


# -- HTTPS load ------------------------------------------------------------------------------------

def request_bytes(worker: str, user: str) -> bytes:
    body = json.dumps({"data": base64.b64encode(b"x" * 1024).decode(), "encoding": "BASE64"}).encode()
    auth = base64.b64encode(f"{user}:".encode()).decode()
    return (f"POST /signserver/rest/v1/workers/{worker}/process HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: Basic {auth}\r\nX-Keyfactor-Requested-With: bench\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def _connection(port: int, ctx: ssl.SSLContext, request: bytes, stop_at: float, latencies: list[float],
                      errors: list[str], limit: int | None = None, interval: float = 0.0) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    n = 0
    try:
        while time.perf_counter() < stop_at and (limit is None or n < limit):
            t0 = time.perf_counter()
            writer.write(request)
            status, body = await read_response(reader)
            latencies.append(time.perf_counter() - t0)
            n += 1
            if status != b"200":
                errors.append(f"{status.decode()} {body[:300]!r}")
                return
            if interval:
                await asyncio.sleep(max(0.0, interval - (time.perf_counter() - t0)))
    finally:
        writer.close()


def https_load(port: int, ctx: ssl.SSLContext, worker: str, seconds: float, connections: int) -> dict[str, Any]:
    warm: list[float] = []

    async def run() -> tuple[list[float], list[str], float]:
        errors: list[str] = []
        await asyncio.gather(*[_connection(port, ctx, request_bytes(worker, f"warm{i}"), time.perf_counter() + 1.0,
                                           warm, errors) for i in range(connections)])
        latencies: list[float] = []
        start = time.perf_counter()
        await asyncio.gather(*[_connection(port, ctx, request_bytes(worker, f"user{i}"), start + seconds, latencies,
                                           errors) for i in range(connections)])
        return latencies, errors, time.perf_counter() - start

    latencies, errors, elapsed = asyncio.run(run())
    return {"count": len(latencies), "rate": len(latencies) / elapsed, "p50": pct(latencies, 0.5),
            "p99": pct(latencies, 0.99), "errors": errors[:3], "error_count": len(errors), "started": time.time() - elapsed,
            "warmup_count": len(warm)}


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _open_loop(port: int, ctx: ssl.SSLContext, worker: str, rate: float, seconds: float, idle: list[Connection],
                     latencies: list[float], errors: list[str], shed: list[float]) -> int:
    """Requests sent at ``rate`` per second whatever the answers do (open loop), each latency
    measured from its scheduled send time: a request that waits for a connection, or for a
    dispatcher the event loop ran late, counts that wait. Kept-alive connections come from
    ``idle``; when every one is busy another is opened (returns how many were). A 503 of the
    worker's load shedding (``MAX_WAITING``) goes to ``shed`` (its latency), not ``latencies``."""
    opened = 0

    async def one(i: int, scheduled: float) -> None:
        nonlocal opened
        if idle:
            conn = idle.pop()
        else:
            opened += 1
            try:
                conn = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            except OSError as exc:  # e.g. refused or reset by an overloaded server: counted, not fatal
                errors.append(f"connecting: {type(exc).__name__}: {exc}")
                return
        reader, writer = conn
        try:
            writer.write(request_bytes(worker, f"user{i % 64}"))
            status, body = await read_response(reader)
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            writer.close()
            return
        idle.append(conn)
        if status == b"503" and b"MAX_WAITING" in body:
            shed.append(time.perf_counter() - scheduled)
            return
        latencies.append(time.perf_counter() - scheduled)
        if status != b"200":
            errors.append(f"{status.decode()} {body[:300]!r}")

    tasks = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i, scheduled)))
    await asyncio.gather(*tasks)
    return opened


def open_loop_load(port: int, ctx: ssl.SSLContext, worker: str, seconds: float, rate: float,
                   connections: int) -> dict[str, Any]:
    """:func:`_open_loop` on ``connections`` connections opened first, after a one-second
    warm-up at the same rate (not counted)."""
    warm: list[float] = []

    shed: list[float] = []

    async def run() -> tuple[list[float], list[str], float, int]:
        errors: list[str] = []
        idle: list[Connection] = list(await asyncio.gather(
            *[asyncio.open_connection("127.0.0.1", port, ssl=ctx) for _ in range(connections)]))
        await _open_loop(port, ctx, worker, rate, 1.0, idle, warm, errors, [])
        latencies: list[float] = []
        start = time.perf_counter()
        opened = await _open_loop(port, ctx, worker, rate, seconds, idle, latencies, errors, shed)
        elapsed = time.perf_counter() - start
        for _, writer in idle:
            writer.close()
        return latencies, errors, elapsed, opened

    latencies, errors, elapsed, opened = asyncio.run(run())
    return {"count": len(latencies), "rate": len(latencies) / elapsed, "offered_rate": rate,
            "p50": pct(latencies, 0.5), "p90": pct(latencies, 0.9), "p99": pct(latencies, 0.99),
            "errors": errors[:3], "error_count": len(errors), "started": time.time() - elapsed,
            "warmup_count": len(warm), "connections_opened_under_load": opened,
            "shed_count": len(shed), "shed_p50": pct(shed, 0.5) if shed else float("nan")}


def paced(port: int, ctx: ssl.SSLContext, worker: str, count: int, interval: float) -> dict[str, Any]:
    async def run() -> tuple[list[float], list[str]]:
        latencies: list[float] = []
        errors: list[str] = []
        await _connection(port, ctx, request_bytes(worker, "rsa"), time.perf_counter() + 3600, latencies, errors,
                          limit=count, interval=interval)
        return latencies, errors

    latencies, errors = asyncio.run(run())
    return {"count": len(latencies), "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99),
            "max": max(latencies) if latencies else float("nan"), "errors": errors[:3]}


def callgrind_prefix(directory: Path) -> list[str]:
    """valgrind's callgrind, instrumenting nothing until :func:`count_instructions` turns it on."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("--callgrind needs valgrind (apt-get install -y valgrind)")
    directory.mkdir(parents=True, exist_ok=True)
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=no",
            f"--callgrind-out-file={directory}/callgrind.out.%p"]


@contextlib.contextmanager
def command_prefix(prefix: list[str]) -> Iterator[None]:
    """``signpeer serve`` started by the test kit's ServerProcess runs under ``prefix``."""
    from signpeer_core.testing import processes

    original = processes.signpeer_cmd
    if prefix:
        processes.signpeer_cmd = lambda *a: [*prefix, *original(*a)]
    try:
        yield
    finally:
        processes.signpeer_cmd = original


def count_instructions(port: int, ctx: ssl.SSLContext, count: int, directory: Path,
                       pids: dict[str, int]) -> dict[str, float]:
    """Instructions per signature of each process in ``pids`` (under callgrind), over ``count``
    signatures sent one after the other on one kept-alive connection, after 20 not counted."""
    def control(*options: str) -> None:
        for pid in pids.values():
            subprocess.run(["callgrind_control", *options, str(pid)], check=True, capture_output=True)

    print(f"\nInstructions per signature under callgrind: {count} signatures, one at a time ...")
    paced(port, ctx, "SignerEC", 20, 0)
    control("--instr=on")
    result = paced(port, ctx, "SignerEC", count, 0)
    control("--dump")
    control("--instr=off")
    if result["errors"]:
        raise RuntimeError(f"signing under callgrind failed: {result['errors']}")
    out: dict[str, float] = {}
    for name, pid in pids.items():
        dumps = sorted(directory.glob(f"callgrind.out.{pid}.*"), key=lambda p: p.stat().st_mtime)
        totals = [line for line in dumps[-1].read_text().splitlines() if line.startswith(("totals:", "summary:"))]
        out[name] = int(totals[0].split()[1]) / count
        print(f"  {name:<18} {out[name] / 1e6:.2f} M instructions per signature")
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (``serve --workers N``)."""
    return sum(tree_cpu(pid))


def database_cpu_seconds(postgres: Any) -> float | None:
    """CPU seconds of the throw-away PostgreSQL server: the postmaster, its processes (a backend
    per connection) and those it reaped; None without one (SQLite runs in the server)."""
    if postgres is None:
        return None
    try:
        pid = int((postgres.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return sum(tree_cpu(pid, reaped=True))


def start_profilers(directory: str, server_pid: int, ra_pid: int, seconds: float) -> list[subprocess.Popen[bytes]]:
    """py-spy on the server (and its worker processes, ``--server-workers N``) and on ra serve for
    ``seconds``: all samples, and only those holding the GIL."""
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if spy is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for name, pid in (("server", server_pid), ("ra-serve", ra_pid)):
        for suffix, extra in (("", []), ("-gil", ["--gil"])):
            procs.append(subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
                                           "--duration", str(int(seconds + 0.999)), "--nonblocking",
                                           "--output", str(out / f"{name}{suffix}.txt"), "--subprocesses", *extra],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def ra_breakdown(home: Path, since: float, queue_worker: str) -> dict[str, float]:
    """Where a request spends its time in the RA queue, from the stored timestamps."""
    from signpeer_core.testing import open_services
    from signpeer_onetimecrypto.raqueue import RaQueue

    services = open_services(home)
    try:
        rows = [r for r in RaQueue(services.store.database).requests(limit=1_000_000)
                if r.created >= since and r.worker == queue_worker and r.state == "answered" and r.claimed_at]
    finally:
        services.close()
    return {"queued -> claimed by the CA peer": statistics.median(r.claimed_at - r.created for r in rows),
            "claimed -> answer stored (CA checks, issues, posts)": statistics.median(
                r.answered_at - r.claimed_at for r in rows),
            "requests": len(rows)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", default="4,8",
                        help="closed loop: client connections (keep-alive), each sending its next request when the "
                             "last is answered; a list runs each")
    parser.add_argument("--rate", default="",
                        help="open loop instead: requests per second sent on schedule whatever the answers do, "
                             "latency from each scheduled send time; a list runs each")
    parser.add_argument("--connections", type=int, default=32,
                        help="open loop: kept-alive connections opened first (more only when all are busy)")
    parser.add_argument("--ec-pool-size", type=int, default=0, help="KEYPOOL_SIZE of the EC one-time worker")
    parser.add_argument("--max-waiting", type=int, default=None,
                        help="MAX_WAITING of the EC one-time worker (default: the worker's default)")
    parser.add_argument("--baseline-count", type=int, default=2000)
    parser.add_argument("--pool-size", type=int, default=8, help="KEYPOOL_SIZE of the RSA pool run")
    parser.add_argument("--rsa-requests", type=int, default=20)
    parser.add_argument("--rsa-interval", type=float, default=0.5, help="seconds between RSA requests")
    parser.add_argument("--server-workers", type=int, default=1)
    parser.add_argument("--ra-parallel", default="2:8", help="min:max parallel long polls of ra serve")
    parser.add_argument("--ra-batch", type=int, default=None,
                        help="requests ra serve claims per poll (default: ra serve's, 4)")
    parser.add_argument("--skip-rsa", action="store_true")
    parser.add_argument("--database", default="sqlite",
                        help="sqlite (the default), postgresql (starts a throw-away server, as the tests do) or a "
                             "postgresql:// URL of an empty database")
    parser.add_argument("--profile", metavar="DIR",
                        help="py-spy (in this Python's bin directory or on PATH) records the server and ra serve "
                             "during the first load run: DIR/{server,ra-serve}{,-gil}.txt, collapsed stacks")
    parser.add_argument("--callgrind", type=int, default=0, metavar="N",
                        help="instead of the load runs: the server and ra serve under valgrind's callgrind, N "
                             "signatures one after the other, and the instructions each process ran per signature "
                             "(repeatable on a busy machine, unlike times)")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if not Path(MODULE).exists() or shutil.which("softhsm2-util") is None:
        print("SoftHSM2 is needed: apt-get install -y softhsm2 opensc", file=sys.stderr)
        return 2

    root = Path(tempfile.mkdtemp(prefix="bench-onetime-"))
    conf = make_token(root / "softhsm")
    os.environ["SOFTHSM2_CONF"] = conf  # before anything in this process loads the module
    from signpeer_core.testing import ServerProcess, client_context, make_pki, signpeer_cmd, write_home

    pki = make_pki(root / "pki")
    ca_peer = pki.issue_client("bench CA peer")
    postgres = None
    settings = f"workers = {args.server_workers}\n"
    if args.database == "postgresql":
        from signpeer_core.testing.postgres import PostgresServer

        postgres = PostgresServer().start()
        atexit.register(postgres.close)  # also when the run fails half-way
        settings = f'database_url = "{postgres.fresh_url()}"\n' + settings
    elif args.database.startswith("postgresql://"):
        settings = f'database_url = "{args.database}"\n' + settings
    elif args.database != "sqlite":
        parser.error("--database takes sqlite, postgresql or a postgresql:// URL")
    print(f"database: {args.database}")
    home = write_home(root / "home", pki, settings=settings)
    configure(home, pki, ca_peer, args.pool_size, args.ec_pool_size, args.max_waiting)
    results: dict[str, Any] = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "database": args.database}

    print(f"In-process one-time cycle (SoftHSM2 P-256 session keys, local CA), {args.baseline_count} sequential ...")
    base = in_process_cycle(home, args.baseline_count)
    results["in_process"] = base
    print(f"  {base['rate']:.0f} cycles/s, p50 {ms(base['p50'])} ms, p99 {ms(base['p99'])} ms")
    for stage, value in base["stages"].items():
        print(f"    {stage:<14} {ms(value)} ms (median)")

    grind = callgrind_prefix(root / "callgrind") if args.callgrind else []
    with command_prefix(grind):
        server = ServerProcess(home, ("--workers", str(args.server_workers)), {"SOFTHSM2_CONF": conf}).start(
            600 if grind else 60)
    lo, hi = args.ra_parallel.split(":")
    ra_log = open(root / "ra-serve.log", "wb")  # closed in the finally below
    ra = subprocess.Popen(grind + signpeer_cmd("ra", "serve", server.url, "--cert", str(ca_peer.pem), "--key",
                                       str(ca_peer.key_pem), "--cacert", str(pki.ca_pem), "--issuer-cert",
                                       str(home / "ca.pem"), "--issuer-key", str(home / "ca-key.pem"),
                                       "--min-parallel", lo, "--max-parallel", hi, "--wait", "20",
                                       *(("--batch", str(args.ra_batch)) if args.ra_batch else ())),
                          env={**os.environ, "SIGNPEER_HOME": str(home), "PYTHONUNBUFFERED": "1"}, stdout=ra_log,
                          stderr=subprocess.STDOUT)
    ctx = client_context(pki.ca_pem)
    try:
        # Load only once ra serve polls: its start-up (importing the plugins, seconds on a loaded
        # machine) would otherwise be in the first requests' latency and in its CPU time.
        deadline = time.monotonic() + 120
        while b"Serving RA requests" not in (root / "ra-serve.log").read_bytes():
            if ra.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"signpeer ra serve did not start: {(root / 'ra-serve.log').read_text()}")
            time.sleep(0.05)
        time.sleep(0.5)  # its first long polls reach the server
        results["https_ec"] = []
        if args.callgrind:
            assert server.proc is not None
            results["callgrind"] = count_instructions(server.port, ctx, args.callgrind, root / "callgrind",
                                                      {"server": server.proc.pid, "signpeer ra serve": ra.pid})
            args.rate, args.concurrency, args.skip_rsa = "", "", True
        loads = ([("open", float(r)) for r in args.rate.split(",")] if args.rate
                 else [("closed", float(c)) for c in args.concurrency.split(",") if c])
        for mode, level in loads:
            if mode == "open":
                print(f"\nEnd to end over HTTPS, open loop: {level:g} requests/s on schedule, {args.seconds:g} s, "
                      f"{args.connections} keep-alive connections, {args.server_workers} server process(es), "
                      f"RA serve {args.ra_parallel} ...")
            else:
                print(f"\nEnd to end over HTTPS: {level:g} keep-alive connections, {args.seconds:g} s, "
                      f"{args.server_workers} server process(es), RA serve {args.ra_parallel} ...")
            assert server.proc is not None
            spies = start_profilers(args.profile, server.proc.pid, ra.pid, args.seconds + 1) \
                if args.profile and not results["https_ec"] else []
            us0 = tree_cpu(server.proc.pid)
            cpu0 = (cpu_seconds(server.proc.pid), cpu_seconds(ra.pid), database_cpu_seconds(postgres),
                    time.process_time())
            if mode == "open":
                e2e = open_loop_load(server.port, ctx, os.environ.get("BENCH_SIGNER", "SignerEC"), args.seconds, level, args.connections)
            else:
                e2e = https_load(server.port, ctx, "SignerEC", args.seconds, int(level))
            us1 = tree_cpu(server.proc.pid)
            cpu1 = (cpu_seconds(server.proc.pid), cpu_seconds(ra.pid), database_cpu_seconds(postgres),
                    time.process_time())
            for spy in spies:
                spy.wait()
            e2e["mode"] = mode
            e2e["rate_offered" if mode == "open" else "concurrency"] = level
            results["https_ec"].append(e2e)
            if e2e["errors"]:
                print("  errors:", e2e["error_count"], e2e["errors"])
            if mode == "open":
                print(f"  {e2e['rate']:.0f} signatures/s answered of {level:g}/s sent, p50 {ms(e2e['p50'])} ms, "
                      f"p90 {ms(e2e['p90'])} ms, p99 {ms(e2e['p99'])} ms ({e2e['count']} requests; "
                      f"{e2e['connections_opened_under_load']} connections opened under load)")
                if e2e["shed_count"]:
                    print(f"  shed (503 + Retry-After, MAX_WAITING): {e2e['shed_count']} requests, "
                          f"answered in p50 {ms(e2e['shed_p50'])} ms")
            else:
                print(f"  {e2e['rate']:.0f} signatures/s, p50 {ms(e2e['p50'])} ms, p99 {ms(e2e['p99'])} ms "
                      f"({e2e['count']} requests)")
            # The warm-up second's requests are in the CPU time too: per request of the whole window.
            total = e2e["count"] + e2e.get("warmup_count", 0)
            e2e["server_cpu_ms_per_request"] = (cpu1[0] - cpu0[0]) * 1000 / max(1, total)
            e2e["ra_serve_cpu_ms_per_request"] = (cpu1[1] - cpu0[1]) * 1000 / max(1, total)
            # The load generator (this process) and PostgreSQL share the 2 cores with the server.
            e2e["client_cpu_ms_per_request"] = (cpu1[3] - cpu0[3]) * 1000 / max(1, total)
            database = None if cpu0[2] is None or cpu1[2] is None else (cpu1[2] - cpu0[2]) * 1000 / max(1, total)
            e2e["database_cpu_ms_per_request"] = database
            print(f"  CPU per signature: server {e2e['server_cpu_ms_per_request']:.2f} ms, signpeer ra serve "
                  f"{e2e['ra_serve_cpu_ms_per_request']:.2f} ms"
                  + (f", PostgreSQL {database:.2f} ms" if database is not None else "")
                  + f", load generator {e2e['client_cpu_ms_per_request']:.2f} ms")
            print("  server user/sys ms:", (us1[0]-us0[0])*1000/max(1,total), (us1[1]-us0[1])*1000/max(1,total))
            breakdown = ra_breakdown(home, e2e["started"], "OneTimeEC")
            e2e["ra_stages"] = breakdown
            queue_ms = breakdown["queued -> claimed by the CA peer"] + breakdown[
                "claimed -> answer stored (CA checks, issues, posts)"]
            print("  per stage (medians):")
            for stage in ("keygen", "csr", "delete"):
                print(f"    {stage:<54} {ms(base['stages'][stage])} ms (in-process figure)")
            for stage, value in breakdown.items():
                if stage != "requests":
                    print(f"    {stage:<54} {ms(value)} ms")
            rest = e2e["p50"] - queue_ms - base["stages"]["keygen"] - base["stages"]["csr"] - base["stages"]["delete"]
            print(f"    {'rest: HTTPS, REST, auth, CMS signing, waits for the CPU':<54} {ms(rest)} ms")
            ratio = e2e["rate"] / base["rate"]
            e2e["ratio_to_in_process"] = ratio
            print(f"  throughput ratio end-to-end / in-process: {ratio:.2f}")
            ok_rate, ok_p50 = e2e["rate"] >= 100, e2e["p50"] <= 0.025
            print(f"  bars: >= 100/s {'MET' if ok_rate else 'MISSED'}, p50 <= 25 ms {'MET' if ok_p50 else 'MISSED'}")
            target = e2e["rate"] >= 200 and e2e["p50"] <= 0.010 and not e2e["error_count"]
            print(f"  issue 13's target, p50 <= 10 ms at >= 200 signatures/s: {'MET' if target else 'MISSED'}")

        if not args.skip_rsa:
            print(f"\nRSA-2048 one-time keys in SoftHSM2, one request every {args.rsa_interval:g} s, "
                  f"{args.rsa_requests} requests ...")
            no_pool = paced(server.port, ctx, "SignerRSA", args.rsa_requests, args.rsa_interval)
            paced(server.port, ctx, "SignerRSAPool", 1, 0)  # the first request starts the pool
            time.sleep(max(3.0, args.pool_size * 0.4))  # let it fill
            with_pool = paced(server.port, ctx, "SignerRSAPool", args.rsa_requests, args.rsa_interval)
            results["rsa"] = {"no_pool": no_pool, "pool": with_pool, "pool_size": args.pool_size}
            for name, r in (("without pool", no_pool), (f"pool of {args.pool_size}", with_pool)):
                print(f"  {name:<14} p50 {ms(r['p50'])} ms, p99 {ms(r['p99'])} ms, max {ms(r['max'])} ms"
                      + (f"  errors {r['errors']}" if r["errors"] else ""))
    finally:
        ra.send_signal(signal.SIGTERM)
        try:
            ra.wait(30)
        except subprocess.TimeoutExpired:
            ra.kill()
        ra_log.close()
        server.stop()
        print("\nRA connector:", (root / "ra-serve.log").read_text().strip().splitlines()[-1:])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print("kept", root)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Peer Systems benchmarks: key binding listing, renew-all --rekey, ping on a kept-alive connection.

Runs ``signpeer serve`` (one process, TLS on loopback) on throw-away data directories and talks
to it as the CA does, with :class:`signpeer_peerconnector.client.PeerClient`.

1. Listing 1k / 10k / 20k visible workers (target: 10k in <= 0.5 s, linear growth). The
   workers share one crypto worker's token (CRYPTOTOKEN), each with its own certificate.
   Reported: median of 5 kept-alive listings (``GET /keybindings`` page after page, 1,000 bindings
   a page, as ``PeerClient.list_bindings`` follows ``nextCursor``), the size of one page, and the
   in-process share (the pages encoded as JSON from the cached per-worker fragments).
2. ``renew-all --rekey`` over 1,000 workers with EC P-256 keys, each with its own INTERNAL soft
   token (target >= 150 renewals/s, issue 13). Reported: rate, client-side seconds per step
   (next key, CSR, issue, install), and the CPU time per renewal of the server and of the
   client (this process: TLS, the CSR check, issuing); of the server's, the share of its event
   loop (the main thread: HTTP, TLS, routing, JSON; the operations run in threads).
   ``BENCH_PARALLEL`` (default 8) sets the renewals at a time, as ``signpeer connector
   renew-all --parallel`` does;
   ``BENCH_SERVER_WORKERS`` (default 1) the server's processes (``signpeer serve --workers N``).
   ``--cpu-affinity`` (repeatable; default ``off`` then ``auto``) runs it once per value of
   ``serve --cpu-affinity``, in one run, so that the two figures share the machine's state.
   Then the yardstick of the run: the same operations (``Renewal.next_key``, ``csr``, issuing,
   ``install``) called in this process one after the other, without HTTP or threads, on the same
   data directory. This host's speed moves by up to 2x between windows; the in-process figure
   moves with it, so the ratio of the server's CPU per renewal to it is what compares across runs.
3. Ping on one kept-alive connection (target p50 <= 2 ms): p50/p90/p99 over 2,000 pings.

Usage: ``python bench/bench_peers.py [--quick]`` (--quick: 1k/2k listing, 200 renewals).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from proccpu import loop_cpu, tree_cpu  # noqa: E402  (bench/proccpu.py, beside this script)

from signpeer_core import devpki  # noqa: E402
from signpeer_core.certificates import encode_certificate_property  # noqa: E402
from signpeer_core.clientrules import ClientRule, serialize_rules  # noqa: E402
from signpeer_core.issuing import IssuingCA  # noqa: E402
from signpeer_core.testing import PASSWORD, ServerProcess, make_pki, open_services, write_home  # noqa: E402
from signpeer_peerconnector.authz import PeerIdentity  # noqa: E402
from signpeer_peerconnector.client import PeerClient, renew_all  # noqa: E402
from signpeer_peerconnector.routes import PeerService  # noqa: E402

TARGET_LIST_10K_S = 0.5
TARGET_RENEW_RATE = 150.0
TARGET_PING_P50_MS = 2.0


def setup_home(base: Path, pki: Any, peer: Any) -> Path:
    home = write_home(base, pki, settings="timeout_keep_alive = 120\nlog_level = \"WARNING\"\n")
    services = open_services(home)
    try:
        services.store.update_global({"GLOB.PEERS_INCOMING_ENABLED": "true",
                                      "GLOB.WSPEERS": serialize_rules([ClientRule.for_certificate(peer.cert)])})
    finally:
        services.close()
    return home


def add_shared_workers(home: Path, pki: Any, start: int, count: int) -> None:
    """Workers ``start+1 .. start+count`` (ids), PEERS_VISIBLE, all using crypto worker 1's token."""
    services = open_services(home)
    try:
        store = services.store
        if start == 0:
            store.update_worker(1, {"NAME": "SharedToken", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
                                    "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "SoftCryptoToken", "KEYSTORETYPE": "INTERNAL",
                                    "KEYSTOREPASSWORD": PASSWORD})
            services.runtime.load()
            services.runtime.get(1).token.generate_key("shared1", "ECDSA", "secp256r1")
            services.runtime.load()
        public = services.runtime.get(1).token.public_key("shared1")
        changes = {}
        for i in range(start, start + count):
            wid = i + 2
            cert = devpki.issue(pki.ca_key, pki.ca_cert, f"CN=Signer{wid}, O=bench", public)
            changes[wid] = ({"NAME": f"Signer{wid}", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "PlainSigner",
                             "CRYPTOTOKEN": "SharedToken", "DEFAULTKEY": "shared1", "PEERS_VISIBLE": "true",
                             "PEERS_ISSUED": "true" if wid % 2 else "false",
                             "SIGNERCERTCHAIN": encode_certificate_property([cert, pki.ca_cert])}, [])
        store.apply_changes(workers=changes)
    finally:
        services.close()


def bench_listing(base: Path, pki: Any, peer: Any, sizes: list[int]) -> list[tuple[int, float]]:
    print("== listing visible workers (GET /keybindings, kept-alive, median of 5)")
    home = setup_home(base / "list", pki, peer)
    results = []
    have = 0
    for n in sizes:
        add_shared_workers(home, pki, have, n - have)
        have = n
        server = ServerProcess(home, (), None).start(timeout=300)
        try:
            with PeerClient(server.url, peer.pem, peer.key_pem, pki.ca_pem, timeout=120) as client:
                client.ping()
                times, size = [], 0
                for _ in range(6):
                    t = time.perf_counter()
                    listed = client.list_bindings()  # every page (GET /keybindings follows nextCursor)
                    times.append(time.perf_counter() - t)
                    assert len(listed) == n
                size = len(client.request("GET", "/keybindings").content)  # one page
                median = statistics.median(times[1:])
        finally:
            server.stop()
        # in-process share: building the bindings and encoding them
        services = open_services(home)
        try:
            from signpeer_peerconnector.bindings import KeyBindings

            kb = KeyBindings(services.runtime)

            def every_page(kb: Any = kb) -> None:
                after = None
                while True:
                    page = json.loads(kb.list_json(after))
                    if "nextCursor" not in page:
                        return
                    after = int(page["nextCursor"])

            every_page()  # fills the per-worker caches, as the first listing in a server does
            builds = []
            for _ in range(5):
                t = time.perf_counter()
                every_page()
                builds.append(time.perf_counter() - t)
            build = statistics.median(builds)
        finally:
            services.close()
        results.append((n, median))
        print(f"  {n:>6} workers: {median * 1000:7.1f} ms per listing ({size / 1e6:.1f} MB); in process: "
              f"bindings as JSON {build * 1000:.1f} ms; "
              f"{median / n * 1e6:.1f} us/binding")
    base_n, base_t = results[0]
    for n, t in results[1:]:
        print(f"  linearity {n // 1000}k/{base_n // 1000}k: time ratio {t / base_t:.2f} for size ratio {n / base_n:.0f}")
    ten = next((t for n, t in results if n == 10000), None)
    if ten is not None:
        print(f"  10k: {ten:.3f} s vs target {TARGET_LIST_10K_S} s -> {'OK' if ten <= TARGET_LIST_10K_S else 'MISSED'}")
    return results


def add_own_token_workers(home: Path, pki: Any, count: int) -> None:
    """``count`` signers, each with its own INTERNAL soft token and an EC P-256 key + certificate."""
    services = open_services(home)
    try:
        store = services.store
        base = {"TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "PlainSigner",
                "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "SoftCryptoToken", "KEYSTORETYPE": "INTERNAL",
                "KEYSTOREPASSWORD": PASSWORD, "DEFAULTKEY": "signer00001", "PEERS_VISIBLE": "true",
                "KEYALG": "ECDSA", "KEYSPEC": "secp256r1"}
        store.apply_changes(workers={wid: ({**base, "NAME": f"EC{wid}"}, []) for wid in range(1, count + 1)})
        services.runtime.load()
        certs = {}
        for wid in range(1, count + 1):
            token = services.runtime.by_id[wid].token
            token.generate_key("signer00001", "ECDSA", "secp256r1")
            cert = devpki.issue(pki.ca_key, pki.ca_cert, f"CN=EC{wid}, O=bench", token.public_key("signer00001"))
            certs[wid] = ({"SIGNERCERTCHAIN": encode_certificate_property([cert, pki.ca_cert])}, [])
        store.apply_changes(workers=certs)
    finally:
        services.close()


def bench_renew_all(base: Path, pki: Any, peer: Any, count: int, cpu_affinity: str = "off") -> float:
    print(f"== renew-all --rekey over {count} workers with EC P-256 keys, serve --cpu-affinity {cpu_affinity}")
    home = setup_home(base / f"renew-{len(list(base.glob('renew-*')))}", pki, peer)
    t = time.perf_counter()
    add_own_token_workers(home, pki, count)
    print(f"  set-up: {time.perf_counter() - t:.1f} s")
    ca_key, ca_cert = devpki.make_ca("CN=Bench Issuing CA, O=bench")
    ca = IssuingCA(ca_key, ca_cert)
    processes = int(os.environ.get("BENCH_SERVER_WORKERS", "1"))
    # (off is left out of the command, so that a checkout from before the option runs too: give
    # that run --cpu-affinity off; the server's environment has no SIGNPEER_* of this process's)
    serve_args = (("--cpu-affinity", cpu_affinity) if cpu_affinity != "off" else ()) + \
        (("--workers", str(processes)) if processes > 1 else ())
    server = ServerProcess(home, serve_args, None).start(timeout=300)
    try:
        assert server.proc is not None
        with PeerClient(server.url, peer.pem, peer.key_pem, pki.ca_pem, timeout=120) as client:
            for _ in range(4 * processes):  # every process answers once before the clock starts
                client.ping()
            parallel = int(os.environ.get("BENCH_PARALLEL", "8"))
            (user0, sys0), own0, loop0 = tree_cpu(server.proc.pid), time.process_time(), loop_cpu(server.proc.pid)
            summary = renew_all(client, ca, rekey=True, parallel=parallel)
            (user1, sys1), own1, loop1 = tree_cpu(server.proc.pid), time.process_time(), loop_cpu(server.proc.pid)
            bindings = client.list_bindings()
    finally:
        server.stop()
    assert not summary.failed, summary.failed[:3]
    assert all(b["keyPairAlias"] == "signer00002" and b["peersIssued"] for b in bindings)
    n = len(summary.renewed)
    print(f"  {n} renewed in {summary.seconds:.2f} s: {summary.rate:.1f} renewals/s "
          f"(target >= {TARGET_RENEW_RATE:.0f}: {'OK' if summary.rate >= TARGET_RENEW_RATE else 'MISSED'}); "
          f"listing {summary.list_seconds * 1000:.0f} ms")
    steps = summary.step_totals()
    total = sum(steps.values())
    print(f"  where the time goes (client-side wall time summed over renewals, {parallel} in parallel):")
    for step in ("nextkey", "csr", "issue", "install"):
        if step in steps:
            print(f"    {step:<8} {steps[step] / n * 1000:6.2f} ms/renewal ({steps[step] / total * 100:4.1f} %)")
    cpu = user1 + sys1 - user0 - sys0
    print(f"  server CPU ({processes} process{'es' if processes > 1 else ''}): {cpu / n * 1000:.2f} ms per renewal "
          f"({cpu:.1f} s in total; user {(user1 - user0) / n * 1000:.2f} ms, system {(sys1 - sys0) / n * 1000:.2f} ms"
          f"{f'; event loop {(loop1 - loop0) / n * 1000:.2f} ms' if processes == 1 else ''}); "
          f"client CPU: {(own1 - own0) / n * 1000:.2f} ms per renewal")
    alone = in_process_renewals(home, ca, peer, min(n, 300))
    print(f"  yardstick, the same operations in this process (no HTTP, no threads, issuing left out): "
          f"{alone * 1000:.2f} ms CPU per renewal ({1 / alone:.0f}/s on one CPU); server CPU per renewal / yardstick: "
          f"{(cpu / n) / alone:.2f}")
    return summary.rate


def in_process_renewals(home: Path, ca: IssuingCA, peer: Any, count: int, warm_up: int = 20) -> float:
    """CPU seconds per renewal of ``count`` workers renewed by the peer service's own calls in this
    process, one after the other, after ``warm_up`` untimed ones (the first workers); the CA's
    issuing between ``csr`` and ``install`` is not counted (the client does it in the served run)."""
    from cryptography import x509

    services = open_services(home)
    try:
        renewal = PeerService(services).renewal
        identity = PeerIdentity.from_certificate(peer.cert)
        ids = sorted(services.runtime.by_id)[:count + warm_up]
        warm_up = min(warm_up, len(ids) // 2)  # a handful of workers: half of them untimed

        issuing = 0.0  # the CA's share, the client's in the run above: left out

        def renew(wid: int) -> None:
            nonlocal issuing
            renewal.next_key(wid, identity, True)
            answer = renewal.csr(wid, identity)
            t = time.process_time()
            chain = ca.issue(x509.load_pem_x509_csr(answer.pem.encode()))
            issuing += time.process_time() - t
            renewal.install(wid, identity, chain)

        for wid in ids[:warm_up]:
            renew(wid)
        issuing, start = 0.0, time.process_time()
        for wid in ids[warm_up:]:
            renew(wid)
        return (time.process_time() - start - issuing) / max(1, len(ids) - warm_up)
    finally:
        services.close()


def bench_ping(base: Path, pki: Any, peer: Any, count: int = 2000) -> float:
    print("== ping on a kept-alive connection")
    home = setup_home(base / "ping", pki, peer)
    server = ServerProcess(home, (), None).start()
    try:
        with PeerClient(server.url, peer.pem, peer.key_pem, pki.ca_pem, max_connections=1) as client:
            for _ in range(200):
                client.request("GET", "/ping")
            times = []
            for _ in range(count):
                t = time.perf_counter()
                client.request("GET", "/ping")
                times.append((time.perf_counter() - t) * 1000)
    finally:
        server.stop()
    times.sort()
    p50, p90, p99 = (times[int(len(times) * q)] for q in (0.5, 0.9, 0.99))
    print(f"  {count} pings: p50 {p50:.2f} ms, p90 {p90:.2f} ms, p99 {p99:.2f} ms "
          f"(target p50 <= {TARGET_PING_P50_MS} ms: {'OK' if p50 <= TARGET_PING_P50_MS else 'MISSED'}; "
          f"ratio {p50 / TARGET_PING_P50_MS:.2f})")
    return p50


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--only", choices=("list", "renew", "ping"), help="run one benchmark")
    parser.add_argument("--cpu-affinity", action="append", metavar="VALUE",
                        help="renew-all with serve --cpu-affinity VALUE (repeatable; default: off, then auto)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        base = Path(tmp)
        pki = make_pki(base / "pki")
        peer = pki.issue_client("Bench CA Peer")
        if args.only in (None, "ping"):
            bench_ping(base, pki, peer)
        if args.only in (None, "list"):
            bench_listing(base, pki, peer, [1000, 2000] if args.quick else [1000, 10000, 20000])
        if args.only in (None, "renew"):
            for value in args.cpu_affinity or ["off", "auto"]:
                bench_renew_all(base, pki, peer, 200 if args.quick else 1000, value)
    return 0


if __name__ == "__main__":
    sys.exit(main())

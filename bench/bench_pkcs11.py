"""Benchmark: PlainSigner with keys in SoftHSM2 against a bare python-pkcs11 signing loop.

Not a test. It creates a throwaway SoftHSM2 token in a temporary folder, a CryptoWorker with
Pkcs11CryptoToken and PlainSigners for an EC P-256 and an RSA-2048 key (certificates from a
throwaway CA), then measures in one run:

* bare: python-pkcs11 alone on the same token — hash 1 KiB on the host, ``CKM_ECDSA`` (or
  ``CKM_SHA256_RSA_PKCS``), one thread, no signpeer;
* signer: ``await worker.process(SignRequest)`` in-process, with N concurrent requests on one
  event loop (the way the server calls it), and with one request at a time;
* processes: the signer loop in 1 and in 2 separate processes on the same token at once.

It prints rates and the ratios signer/bare (target >= 0.8 for EC P-256) and 2 procs/1 proc.

``--cpu`` and ``--callgrind`` measure the production paths of a PlainSigner on this token:
``await worker.process(SignRequest)``, the quoted figure (what the pipeline runs: a REST request
with options or an Authorization header, to a USERNAME or plugin-authorized worker, the other
transports), and beside it the direct path (``signpeer_core/directsigning.py``: a REST JSON
request without options to a NOAUTH worker, or from an authorized client certificate to a
CLIENTCERT one, signed by ``worker.ready_prepared()`` without a request, a coroutine or a
response object); and a REST request from an authorized client to the signer (CLIENTCERT, the
default) both ways (:func:`rest_paths`): through ``Pipeline.process`` (the way of every such
request before round 7 directauth, and of those the direct path does not take now: options, an
Authorization header, multipart, the servlet), and the direct path, decision included.

    .venv/bin/python bench/bench_pkcs11.py [--seconds 3] [--concurrency 16]
    .venv/bin/python bench/bench_pkcs11.py --cpu 30  # CPU time per signature, bare and signer interleaved
    .venv/bin/python bench/bench_pkcs11.py --callgrind 3  # instructions per signature (valgrind)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
LABEL, PIN, SO_PIN = "bench", "1234", "5678"
DATA = os.urandom(1024)


def make_token_dir(root: Path) -> Path:
    (root / "tokens").mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", LABEL, "--pin", PIN, "--so-pin", SO_PIN],
                   check=True, capture_output=True, env={**os.environ, "SOFTHSM2_CONF": str(conf)})
    return conf


def open_services(home: Path):
    import signpeer_pkcs11token.plugin
    from signpeer_core.plugins import Registry, get_plugin_manager
    from signpeer_core.services import Services
    from signpeer_core.settings import load_settings

    pm = get_plugin_manager(load_entry_points=False)
    pm.register(signpeer_pkcs11token.plugin, name="pkcs11token")
    return Services.open(load_settings(home), registry=Registry(pm))


def setup(home: Path) -> None:
    """Workers, keys and certificates, written to the database in ``home``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from signpeer_core.auth import AuthorizedClient, serialize_authorized_clients
    from signpeer_core.certificates import encode_certificate_property

    services = open_services(home)
    store = services.store
    store.update_worker(1, {"NAME": "HSM", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
                            "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "PKCS11CryptoToken", "SHAREDLIBRARY": MODULE,
                            "SLOTLABELTYPE": "TOKEN_LABEL", "SLOTLABELVALUE": LABEL, "PIN": PIN})
    services.runtime.load()
    token = services.runtime.get("HSM").crypto_token()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name.from_rfc4514_string("CN=Bench CA")
    now = dt.datetime.now(dt.UTC)
    client = client_certificate(ca_key, ca_name)
    rules = serialize_authorized_clients([AuthorizedClient.for_certificate(client, "SUBJECT_RDN_CN")])
    for wid, alias, keyalg, spec in ((2, "ec", "ECDSA", "secp256r1"), (3, "rsa", "RSA", "2048")):
        token.generate_key(alias, keyalg, spec)
        cert = (x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string(f"CN={alias}"))
                .issuer_name(ca_name).public_key(token.public_key(alias)).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                .sign(ca_key, hashes.SHA256()))
        store.update_worker(wid, {"NAME": f"Plain_{alias}", "IMPLEMENTATION_CLASS": "PlainSigner", "CRYPTOTOKEN": "HSM",
                                  "DEFAULTKEY": alias, "SIGNERCERTCHAIN": encode_certificate_property([cert]),
                                  "AUTHORIZED_CLIENTS": rules})  # AUTHTYPE: CLIENTCERT, the default
    services.close()


def client_certificate(ca_key=None, ca_name=None):
    """The bench's TLS client certificate (CN=bench client), the one the signers' rule accepts:
    made once per run from the bench CA (``setup``), read again by the loops."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    global _CLIENT
    if ca_key is not None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        _CLIENT = (x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string("CN=bench client"))
                   .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                   .sign(ca_key, hashes.SHA256()))
    return _CLIENT


_CLIENT = None


def rest_paths(services):
    """(general, direct): coroutine functions of one loop of ``n`` requests from the bench client's
    connection (one :class:`Caller`, as the REST API keeps per TLS connection) to the CLIENTCERT
    signer ``Plain_ec``, without the HTTP layer: ``general`` as every such request ran before
    round 7 (directauth), and as those the direct path does not take run now —
    ``Pipeline.process`` with the REST API's parsing step, the authorizer's decision,
    ``worker.process``; ``direct`` as rest.py runs it now — ``DirectSigning.find`` (the worker, its
    readiness, the authorizer's decision for the connection's certificate), the prepared signer,
    the token time (``signpeer_core/directsigning.py``)."""
    from signpeer_core.directsigning import DirectSigning
    from signpeer_core.identity import CertificateIdentity
    from signpeer_core.pipeline import Caller, TransportRequest

    caller = Caller("REST", CertificateIdentity.from_certificate(client_certificate()), "127.0.0.1")
    pipeline = services.pipeline
    find = DirectSigning(pipeline).find

    async def general(n: int) -> None:
        for i in range(n):
            async def parse() -> TransportRequest:
                return TransportRequest(DATA, {})

            await pipeline.process("Plain_ec", parse, caller, str(i))

    async def direct(n: int) -> None:
        for _ in range(n):
            found = find("Plain_ec", caller)
            worker, sign = found  # None would fail here: the bench client is authorized
            signature, seconds = sign(DATA)
            worker.observe_token(seconds)

    return general, direct


def bare_key(alias: str):
    """The key ``alias`` as python-pkcs11 alone sees it, in a session of its own."""
    import pkcs11
    from pkcs11 import ObjectClass

    lib = pkcs11.lib(MODULE)
    token = lib.get_token(token_label=LABEL)
    try:
        session = token.open(user_pin=PIN)
    except pkcs11.exceptions.UserAlreadyLoggedIn:  # signpeer's token in this process logged in
        session = token.open()
    return session.get_key(ObjectClass.PRIVATE_KEY, label=alias)


def bare_rate(alias: str, seconds: float) -> float:
    """python-pkcs11 alone: the ceiling signpeer is compared with."""
    import pkcs11
    from pkcs11 import Mechanism

    key = bare_key(alias)
    if key.key_type == pkcs11.KeyType.EC:
        def one() -> None:
            key.sign(hashlib.sha256(DATA).digest(), mechanism=Mechanism.ECDSA)
    else:
        def one() -> None:
            key.sign(DATA, mechanism=Mechanism.SHA256_RSA_PKCS)
    n, end = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        one()
        n += 1
    rate = n / (time.perf_counter() - start)
    return rate


def signer_rate(services, worker_name: str, seconds: float, concurrency: int) -> float:
    from signpeer_core.workers import SignRequest

    worker = services.runtime.get(worker_name)
    assert worker.status().active, worker.status().reasons

    async def main() -> int:
        done = 0
        end = time.perf_counter() + seconds

        async def client(c: int) -> None:
            nonlocal done
            i = 0
            while time.perf_counter() < end:
                await worker.process(SignRequest(data=DATA, request_id=f"{c}-{i}"))
                i += 1
            done += i

        await asyncio.gather(*(client(c) for c in range(concurrency)))
        return done

    start = time.perf_counter()
    n = asyncio.run(main())
    return n / (time.perf_counter() - start)


def signature_loops(services, runner: asyncio.Runner, n: int) -> dict[str, Callable[[], object]]:
    """The loops of ``n`` EC P-256 signatures both measures run, by name, each a plain call (the
    coroutines run on ``runner``, one event loop for the whole run, as in the server):

    * ``bare``: python-pkcs11 alone (hash on the host, ``CKM_ECDSA``);
    * ``signer``: ``await worker.process(SignRequest)``, as the pipeline calls it (inline when the
      token is idle, see ``Pkcs11CryptoToken.run_blocking``);
    * ``prepared``: the worker's prepared signing function alone;
    * ``direct``: what the server's direct path does per NOAUTH REST request (:func:`direct_signature`);
    * ``cc_pipe``/``cc_direct``: a REST request from an authorized client to a CLIENTCERT signer,
      through the pipeline and on the direct path (:func:`rest_paths`)."""
    from pkcs11 import Mechanism

    from signpeer_core.workers import SignRequest

    key = bare_key("ec")
    worker = services.runtime.get("Plain_ec")
    general, clientcert = rest_paths(services)

    def bare() -> None:
        for _ in range(n):
            key.sign(hashlib.sha256(DATA).digest(), mechanism=Mechanism.ECDSA)

    async def signer() -> None:
        for i in range(n):
            await worker.process(SignRequest(DATA, str(i)))  # positional, as the pipeline builds it

    def prepared() -> None:
        sign = worker.ready_prepared()
        for _ in range(n):
            sign(DATA)

    async def direct() -> None:
        for _ in range(n):
            direct_signature(worker.ready_prepared, worker.observe_token)

    return {"bare": bare, "signer": lambda: runner.run(signer()), "prepared": prepared,
            "direct": lambda: runner.run(direct()), "cc_pipe": lambda: runner.run(general(n)),
            "cc_direct": lambda: runner.run(clientcert(n))}


def interleaved_cpu(services, rounds: int, n: int = 1000) -> dict[str, list[float]]:
    """CPU microseconds per EC P-256 signature of each of :func:`signature_loops` but
    ``prepared``, in ``rounds`` interleaved loops of ``n``: CPU time of this thread (SoftHSM2
    signs in it), which the machine's other load inflates far less than a rate. The loops run
    back to back in each round, so the ratio of one round compares them under the same load."""
    out: dict[str, list[float]] = {}
    with asyncio.Runner() as runner:
        loops = signature_loops(services, runner, n)
        del loops["prepared"]
        loops["signer"]()  # warm up
        for _ in range(rounds):
            for name, loop in loops.items():
                started = time.thread_time()
                loop()
                out.setdefault(name, []).append((time.thread_time() - started) / n * 1e6)
    return out


def direct_signature(ready, observe) -> None:
    """What signpeer_core/directsigning.py does per request around the signature (a REST JSON
    request without options to a ready NOAUTH PlainSigner), inline in its coroutine: the worker's
    prepared signer, the signature, the time in the token observed. No SignRequest, no
    ``process`` coroutine, no SignResponse."""
    signature, seconds = ready()(DATA)
    observe(seconds)


def instruction_counts(services, rounds: int, n: int = 1000) -> dict[str, list[float]]:
    """Instructions per EC P-256 signature of each of :func:`signature_loops`, counted by
    callgrind around each loop of ``n`` (this process runs under ``valgrind --tool=callgrind
    --instr-atstart=no``; it turns counting on and off itself with ``callgrind_control``). An
    empty window is counted too and taken off every loop's figure (the two ``callgrind_control``
    calls around a loop)."""
    directory = Path(os.environ["BENCH_CALLGRIND_DIR"])
    pid = os.getpid()
    dumps = 0

    def control(*options: str) -> None:
        subprocess.run(["callgrind_control", *options, str(pid)], check=True, capture_output=True)

    def counted(fn) -> float:
        nonlocal dumps
        control("--instr=on")
        fn()
        control("--dump")
        control("--instr=off")
        dumps += 1
        text = (directory / f"callgrind.out.{pid}.{dumps}").read_text()
        return float(next(line for line in text.splitlines() if line.startswith("totals:")).split()[1])

    out: dict[str, list[float]] = {}
    with asyncio.Runner() as runner:
        loops = signature_loops(services, runner, n)
        loops["cc_pipe"](), loops["cc_direct"](), loops["signer"]()  # warm up
        for _ in range(rounds):
            base = counted(lambda: None)
            for name, loop in loops.items():
                out.setdefault(name, []).append((counted(loop) - base) / n)
    return out


def run_under_callgrind(rounds: int) -> None:
    """This bench again under callgrind with ``--callgrind-child``: it prints the counts."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("--callgrind needs valgrind (apt-get install -y valgrind)")
    with tempfile.TemporaryDirectory(prefix="signpeer-bench-cg-") as tmp:
        env = {**os.environ, "BENCH_CALLGRIND_DIR": tmp}
        subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=no",
                        f"--callgrind-out-file={tmp}/callgrind.out.%p", sys.executable, __file__,
                        "--callgrind-child", str(rounds)], check=True, env=env)


def child(home: Path, worker_name: str, seconds: float, concurrency: int, start_at: float) -> None:
    services = open_services(home)
    signer_rate(services, worker_name, 0.3, concurrency)  # warm up (key cache, threads)
    time.sleep(max(0.0, start_at - time.time()))
    print(json.dumps({"rate": signer_rate(services, worker_name, seconds, concurrency)}))
    services.close()


def processes_rate(home: Path, worker_name: str, seconds: float, concurrency: int, count: int) -> float:
    start_at = time.time() + 2.0  # let every process load and warm up first
    procs = [subprocess.Popen([sys.executable, __file__, "--child", str(home), worker_name, str(seconds),
                               str(concurrency), str(start_at)], stdout=subprocess.PIPE, text=True, env=os.environ)
             for _ in range(count)]
    rates = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        if p.returncode != 0:
            raise SystemExit(f"child process failed with status {p.returncode}")
        rates.append(json.loads(out.strip().splitlines()[-1])["rate"])
    return sum(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--cpu", type=int, metavar="ROUNDS",
                        help="only EC P-256: bare and signer loops interleaved ROUNDS times, CPU time per signature")
    parser.add_argument("--callgrind", type=int, metavar="ROUNDS",
                        help="only EC P-256: instructions per signature (valgrind's callgrind) of ROUNDS loops of "
                             "1000 of each kind")
    parser.add_argument("--callgrind-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.callgrind:
        run_under_callgrind(args.callgrind)
        return
    if args.child:
        home, name, seconds, conc, start_at = args.child
        child(Path(home), name, float(seconds), int(conc), float(start_at))
        return

    with tempfile.TemporaryDirectory(prefix="signpeer-bench-") as tmp:
        root = Path(tmp)
        os.environ["SOFTHSM2_CONF"] = str(make_token_dir(root / "softhsm"))
        home = root / "home"
        setup(home)
        if args.callgrind_child:
            # Under callgrind a signature takes some 50 times as long: inline still, as it would be
            # at full speed (the inline limit is read when the signer prepares its function).
            import signpeer_pkcs11token.token

            signpeer_pkcs11token.token.INLINE_LIMIT = 1.0
        services = open_services(home)
        if args.callgrind_child:
            counts = instruction_counts(services, args.callgrind_child)
            services.close()
            mid = {name: statistics.median(values) for name, values in counts.items()}
            for name, values in counts.items():
                print(f"{name:<9} " + " / ".join(f"{v:,.0f}" for v in values) + f"  (median {mid[name]:,.0f})")
            print(f"signpeer's own (signer - bare): {mid['signer'] - mid['bare']:,.0f}; prepared over bare: "
                  f"{mid['prepared'] - mid['bare']:,.0f}; direct path over bare: {mid['direct'] - mid['bare']:,.0f} "
                  "instructions per signature (medians)")
            print(f"REST request from an authorized client to the CLIENTCERT signer, over bare: through the pipeline "
                  f"{mid['cc_pipe'] - mid['bare']:,.0f}; the direct path "
                  f"{mid['cc_direct'] - mid['bare']:,.0f} instructions per signature (medians)")
            return
        if args.cpu:
            loops = interleaved_cpu(services, args.cpu)
            bares, signers, directs = loops["bare"], loops["signer"], loops["direct"]
            generals, clientcerts = loops["cc_pipe"], loops["cc_direct"]
            bare, signer, direct = min(bares), min(signers), min(directs)
            # The best of each side alone swings with a single lucky loop; the median of the
            # ratios of the rounds (bare and signer back to back) is the robust figure.
            ratio = statistics.median(b / s for b, s in zip(bares, signers, strict=True))
            own = statistics.median(s - b for b, s in zip(bares, signers, strict=True))
            print(f"EC P-256, CPU per signature (best of {args.cpu} interleaved loops of 1000): bare {bare:.1f} us, "
                  f"PlainSigner {signer:.1f} us, signpeer's own {signer - bare:.1f} us; ratio bare/signer "
                  f"{bare / signer:.2f}; median of the {args.cpu} rounds' ratios {ratio:.2f} (signpeer's own "
                  f"{own:.1f} us) (target >= 0.9)")
            ratio = statistics.median(b / d for b, d in zip(bares, directs, strict=True))
            own = statistics.median(d - b for b, d in zip(bares, directs, strict=True))
            print(f"  the direct path (REST, NOAUTH, directsigning.py): best {direct:.1f} us, ratio bare/direct "
                  f"{bare / direct:.2f}; median of the rounds' ratios {ratio:.2f} (signpeer's own {own:.1f} us)")
            for name, loops in (("pipeline", generals), ("direct path", clientcerts)):
                ratio = statistics.median(b / d for b, d in zip(bares, loops, strict=True))
                own = statistics.median(d - b for b, d in zip(bares, loops, strict=True))
                print(f"  REST CLIENTCERT, authorized client, {name}: best {min(loops):.1f} us, ratio bare/it "
                      f"{bare / min(loops):.2f}; median of the rounds' ratios {ratio:.2f} (signpeer's own {own:.1f} us)")
            services.close()
            return
        s = args.seconds
        print(f"SoftHSM2 token in {root}; {s:.0f} s per measurement, 1 KiB messages, "
              f"{os.cpu_count()} CPUs\n")
        print(f"{'key':<10}{'bare p11':>12}{'signer c=' + str(args.concurrency):>14}{'signer c=1':>12}"
              f"{'ratio':>8}{'ratio c=1':>11}")
        for alias in ("ec", "rsa"):
            signer_rate(services, f"Plain_{alias}", 0.3, args.concurrency)  # warm up
            bare = bare_rate(alias, s)
            conc = signer_rate(services, f"Plain_{alias}", s, args.concurrency)
            seq = signer_rate(services, f"Plain_{alias}", s, 1)
            bare2 = bare_rate(alias, s)  # again: the machine is noisy, take the mean
            bare = (bare + bare2) / 2
            name = "EC P-256" if alias == "ec" else "RSA-2048"
            print(f"{name:<10}{bare:>10.0f}/s{conc:>12.0f}/s{seq:>10.0f}/s{conc / bare:>8.2f}{seq / bare:>11.2f}")
        services.close()
        print()
        for alias in ("ec", "rsa"):
            one = processes_rate(home, f"Plain_{alias}", s, args.concurrency, 1)
            two = processes_rate(home, f"Plain_{alias}", s, args.concurrency, 2)
            name = "EC P-256" if alias == "ec" else "RSA-2048"
            print(f"{name:<10} PlainSigner 1 process {one:>7.0f}/s, 2 processes {two:>7.0f}/s, ratio {two / one:.2f}")


if __name__ == "__main__":
    main()

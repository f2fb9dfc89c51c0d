"""Time-stamping speed, in process: TimeStampSigner against the bare signing rate of the same key,
and the cost a signature time-stamp adds to a one-time CMS signature.

1. Time-stamps/s through the pipeline (parse and check the TimeStampReq, serial, TSTInfo, ESS
   signing-certificate-v2, sign, verify the token (VERIFY_TOKEN_SIGNATURE, SignServer's default),
   reply) against ``cryptography`` signing 200 bytes with the same key, one after the other in the
   same run. Target (issue 16): ratio >= 0.5. Measured for the keys SignServer TSAs use: RSA-2048
   (SHA256withRSA, SignServer's default) and EC P-256.
2. One-time CMS signatures (OneTimeCryptoWorker, local CA, soft P-256 keys) without and with
   ``TSA_WORKER``: signatures/s and the mean milliseconds the time-stamp adds.

Usage: python bench/bench_tsa.py [--seconds 2] [--rounds 3] [--skip-onetime]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from signpeer_core import devpki
from signpeer_core.keys import sign
from signpeer_core.pipeline import Caller, TransportRequest
from signpeer_core.testing import PASSWORD, add_signer, make_pki, open_services, write_home
from signpeer_core.timestamping import build_request


def add_tsa(services: Any, pki: Any, name: str, keyalg: str, keyspec: str, **props: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from signpeer_core.certificates import encode_certificate_property

    wid = add_signer(services, pki, name, implementation="TimeStampSigner", keyalg=keyalg, keyspec=keyspec,
                     DEFAULTTSAPOLICYOID="1.2.3.4", ACCEPTANYPOLICY="true", AUTHTYPE="NOAUTH", **props)
    token = services.runtime.get(name).token
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string(f"CN={name}"))
            .issuer_name(pki.ca_cert.subject).public_key(token.public_key("signer00001"))
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .sign(pki.ca_key, hashes.SHA256()))
    services.store.update_worker(wid, {"SIGNERCERTCHAIN": encode_certificate_property([cert, pki.ca_cert])})
    services.runtime.load()
    status = services.runtime.get(name).status()
    assert status.active, status.reasons


async def interleaved(services: Any, name: str, request: bytes, seconds: float) -> tuple[float, float]:
    """(bare signatures/s, time-stamps/s), measured in alternating blocks of 20 so that both see
    the same load on a shared machine."""
    worker = services.runtime.get(name)
    key, algorithm, data = worker.token.private_key("signer00001"), worker.algorithm, bytes(200)
    pipeline, caller = services.pipeline, Caller("BENCH")
    bare_time = tsa_time = 0.0
    n = 0
    while bare_time + tsa_time < seconds:
        t0 = time.perf_counter()
        for _ in range(20):
            sign(key, algorithm, data)
        t1 = time.perf_counter()
        for _ in range(20):
            await pipeline.process(name, TransportRequest(data=request), caller)
        t2 = time.perf_counter()
        bare_time += t1 - t0
        tsa_time += t2 - t1
        n += 20
    return n / bare_time, n / tsa_time


async def rate_pipeline(services: Any, name: str, data: bytes, seconds: float) -> float:
    pipeline, caller = services.pipeline, Caller("BENCH")
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(20):
            await pipeline.process(name, TransportRequest(data=data), caller)
        n += 20
    return n / elapsed


async def alternating(services: Any, seconds: float) -> tuple[list[float], list[float]]:
    """Latencies (ms) of one-time CMS signatures without and with a time-stamp, one of each in turn."""
    pipeline, caller = services.pipeline, Caller("BENCH")
    plain: list[float] = []
    stamped: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for name, into in (("Plain1", plain), ("Stamped1", stamped)):
            t0 = time.perf_counter()
            await pipeline.process(name, TransportRequest(data=b"document"), caller)
            into.append((time.perf_counter() - t0) * 1000)
    return plain, stamped


def onetime(services: Any, home: Path, pki: Any, seconds: float, rounds: int) -> None:
    from signpeer_onetimecrypto.worker import close_pools

    devpki.write_public(home / "onetime-ca.pem", devpki.cert_pem(pki.ca_cert))
    devpki.write_private(home / "onetime-ca-key.pem", devpki.key_pem(pki.ca_key))
    store = services.store
    wid = store.next_worker_id()
    store.update_worker(wid, {"NAME": "Source", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
                              "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "SoftCryptoToken", "KEYSTORETYPE": "INTERNAL",
                              "KEYSTOREPASSWORD": PASSWORD})
    store.update_worker(wid + 1, {"NAME": "OneTime", "IMPLEMENTATION_CLASS": "OneTimeCryptoWorker",
                                  "CRYPTOTOKEN": "Source", "CACONNECTOR_IMPLEMENTATION": "LocalCAConnector",
                                  "CACERTIFICATE_FILE": "onetime-ca.pem", "CAKEY_FILE": "onetime-ca-key.pem",
                                  "CERTIFICATEENDTIME": "0:0:10"})
    cms = {"TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "CMSSigner", "CRYPTOTOKEN": "OneTime", "AUTHTYPE": "NOAUTH"}
    store.update_worker(wid + 2, {"NAME": "Plain1", **cms})
    store.update_worker(wid + 3, {"NAME": "Stamped1", "TSA_WORKER": "TSA-EC", **cms})
    services.runtime.load()
    try:
        for r in range(rounds):
            plain, stamped = asyncio.run(alternating(services, seconds))
            print(f"one-time CMS round {r + 1}: p50 {statistics.median(plain):.2f} ms unstamped, "
                  f"{statistics.median(stamped):.2f} ms with TSA_WORKER (the time-stamp adds "
                  f"{statistics.median(stamped) - statistics.median(plain):.2f} ms); fastest "
                  f"{min(plain):.2f} / {min(stamped):.2f} ms; {len(plain)} of each")
    finally:
        close_pools()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-onetime", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pki = make_pki(root / "pki")
        home = write_home(root / "home", pki)
        services = open_services(home)
        try:
            add_tsa(services, pki, "TSA-RSA", "RSA", "2048")
            add_tsa(services, pki, "TSA-EC", "ECDSA", "secp256r1")
            add_tsa(services, pki, "TSA-EC-noverify", "ECDSA", "secp256r1", VERIFY_TOKEN_SIGNATURE="false")
            request = build_request("sha256", bytes(range(32)), nonce=12345)
            for name in ("TSA-RSA", "TSA-EC", "TSA-EC-noverify"):
                for r in range(args.rounds):
                    bare, tsa = asyncio.run(interleaved(services, name, request, 2 * args.seconds))
                    print(f"{name} round {r + 1}: bare signing {bare:8.0f}/s, time-stamps {tsa:8.0f}/s, "
                          f"ratio {tsa / bare:.2f} (target >= 0.5)")
            if not args.skip_onetime:
                onetime(services, home, pki, args.seconds, args.rounds)
        finally:
            services.close()


if __name__ == "__main__":
    main()

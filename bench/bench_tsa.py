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


def rate_bare(services: Any, name: str, seconds: float) -> float:
    worker = services.runtime.get(name)
    key = worker.token.private_key("signer00001")
    algorithm = worker.algorithm
    data = bytes(200)
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(20):
            sign(key, algorithm, data)
        n += 20
    return n / elapsed


async def rate_pipeline(services: Any, name: str, data: bytes, seconds: float) -> float:
    pipeline, caller = services.pipeline, Caller("BENCH")
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(20):
            await pipeline.process(name, TransportRequest(data=data), caller)
        n += 20
    return n / elapsed


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
            plain = asyncio.run(rate_pipeline(services, "Plain1", b"document", seconds))
            stamped = asyncio.run(rate_pipeline(services, "Stamped1", b"document", seconds))
            added = (1 / stamped - 1 / plain) * 1000
            print(f"one-time CMS round {r + 1}: {plain:8.0f}/s unstamped, {stamped:8.0f}/s with TSA_WORKER, "
                  f"time-stamp adds {added:.2f} ms per signature ({100 * (plain / stamped - 1):.0f} %)")
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
                    bare = rate_bare(services, name, args.seconds)
                    tsa = asyncio.run(rate_pipeline(services, name, request, args.seconds))
                    print(f"{name} round {r + 1}: bare signing {bare:8.0f}/s, time-stamps {tsa:8.0f}/s, "
                          f"ratio {tsa / bare:.2f} (target >= 0.5)")
            if not args.skip_onetime:
                onetime(services, home, pki, args.seconds, args.rounds)
        finally:
            services.close()


if __name__ == "__main__":
    main()

"""In-process signing speed: PlainSigner (EC P-256 soft key) against bare `cryptography`.

Both run in the same process and the same run, so the ratio holds on a noisy shared machine.
Target (issue 2): PlainSigner reaches at least 50 % of the bare P-256 signing rate.
Usage: python bench/bench_sign.py [--seconds 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from signpeer_core import devpki
from signpeer_core.certificates import encode_certificate_property
from signpeer_core.services import Services
from signpeer_core.settings import load_settings
from signpeer_core.tokens import KeystoreCreator
from signpeer_core.workers import SignRequest


def setup(home: Path) -> Services:
    services = Services.open(load_settings(home), load=False)
    services.store.update_worker(1, {
        "NAME": "Token", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
        "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "SoftCryptoToken", "KEYSTORETYPE": "PKCS12",
        "KEYSTOREPATH": "bench.p12", "KEYSTOREPASSWORD": "bench-password"})
    services.store.update_worker(2, {
        "NAME": "Plain", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "PlainSigner",
        "CRYPTOTOKEN": "Token", "DEFAULTKEY": "signer1", "SIGNATUREALGORITHM": "SHA256withECDSA"})
    services.runtime.load()
    token = services.runtime.get("Token").token
    assert isinstance(token, KeystoreCreator)
    token.create_keystore()  # the keystore file is new: created when asked (KEYSTOREPASSWORD)
    token.generate_key("signer1", "ECDSA", "secp256r1")
    ca_key, ca = devpki.make_ca("CN=Bench CA")
    cert = devpki.issue(ca_key, ca, "CN=Plain", token.public_key("signer1"))
    services.store.update_worker(2, {"SIGNERCERTCHAIN": encode_certificate_property([cert, ca])})
    services.runtime.load()
    status = services.runtime.get("Plain").status()
    assert status.active, status.reasons
    return services


def rate_bare(key: ec.EllipticCurvePrivateKey, data: bytes, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    algo = ec.ECDSA(hashes.SHA256())
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(200):
            key.sign(data, algo)
        n += 200
    return n / elapsed


async def rate_worker(services: Services, data: bytes, seconds: float) -> float:
    worker = services.runtime.get("Plain")
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(200):
            await worker.process(SignRequest(data=data, request_id=str(n)))
        n += 200
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = b"x" * 1024
    with tempfile.TemporaryDirectory() as tmp:
        services = setup(Path(tmp))
        key = services.runtime.get("Token").token.private_key("signer1")
        bare, worker = [], []
        for _ in range(args.rounds):  # interleaved, so drift in machine load hits both alike
            bare.append(rate_bare(key, data, args.seconds))
            worker.append(asyncio.run(rate_worker(services, data, args.seconds)))
        services.close()
    b, w = max(bare), max(worker)
    print(f"bare cryptography P-256 sign: {b:9.0f} /s")
    print(f"PlainSigner.process (P-256):  {w:9.0f} /s")
    print(f"ratio PlainSigner/bare: {w / b:.2f} (target >= 0.50)")


if __name__ == "__main__":
    main()

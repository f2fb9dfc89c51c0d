"""Fixtures of the TSA tests: time-stamp workers with a MemoryCryptoToken key and a certificate
from the development CA carrying the timeStamping extended key usage (or not, on purpose), and
the openssl calls that check their answers."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from signpeer_core.certificates import encode_certificate_property
from signpeer_core.names import parse_dn
from signpeer_core.testing import PKI, add_signer
from signpeer_core.workers import SignRequest

POLICY = "1.3.6.1.4.1.22408.1.2.3.45"


def tsa_certificate(pki: PKI, public_key: Any, dn: str = "CN=Test TSA, O=signpeer tests", eku: str = "tsa",
                    days: int = 365) -> x509.Certificate:
    """A certificate for ``public_key`` from the test CA. ``eku``: ``tsa`` (critical timeStamping),
    ``none``, ``noncritical`` or ``extra`` (timeStamping and codeSigning)."""
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(parse_dn(dn))
               .issuer_name(pki.ca_cert.subject).public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True))
    usages = {"tsa": [ExtendedKeyUsageOID.TIME_STAMPING], "noncritical": [ExtendedKeyUsageOID.TIME_STAMPING],
              "extra": [ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.CODE_SIGNING]}.get(eku)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=eku != "noncritical")
    return builder.sign(pki.ca_key, hashes.SHA256())


def add_tsa(services: Any, pki: PKI, name: str = "TSA", keyalg: str = "ECDSA", keyspec: str = "secp256r1",
            eku: str = "tsa", **props: str) -> x509.Certificate:
    """A TimeStampSigner ``name`` (ACCEPTANYPOLICY=true, the sample's default policy, AUTHTYPE=NOAUTH);
    ``props`` override or add properties (an empty value counts as unset). Returns its certificate."""
    base = {"DEFAULTTSAPOLICYOID": POLICY, "ACCEPTANYPOLICY": "true", "AUTHTYPE": "NOAUTH"}
    base.update(props)
    wid = add_signer(services, pki, name, implementation="TimeStampSigner", keyalg=keyalg, keyspec=keyspec, **base)
    token = services.runtime.get(name).token
    cert = tsa_certificate(pki, token.public_key("signer00001"), eku=eku)
    services.store.update_worker(wid, {"SIGNERCERTCHAIN": encode_certificate_property([cert, pki.ca_cert])})
    services.runtime.load()
    return cert


def process(services: Any, worker: str, data: bytes, request_id: str = "t1") -> bytes:
    """One request through the pipeline's worker (as the transports call it)."""
    from signpeer_core.pipeline import Caller, TransportRequest

    result = asyncio.run(services.pipeline.process(worker, TransportRequest(data=data), Caller("TEST"),
                                                   request_id=request_id))
    return bytes(result.data)


def worker_process(services: Any, worker: str, data: bytes) -> bytes:
    w = services.runtime.get(worker)
    return bytes(asyncio.run(w.process(SignRequest(data=data, request_id="t1"))).data)


def openssl(*args: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    out = subprocess.run(["openssl", *args], capture_output=True, input=input, check=False)
    if check:
        assert out.returncode == 0, (args, out.stderr.decode(errors="replace"))
    return out


def ts_query(tmp_path: Path, data: bytes = b"hello", *opts: str, name: str = "req.tsq") -> Path:
    """``openssl ts -query`` over ``data`` (``opts``: -sha1, -no_nonce, -tspolicy X, -cert ...)."""
    doc = tmp_path / "doc.bin"
    doc.write_bytes(data)
    out = tmp_path / name
    openssl("ts", "-query", "-data", str(doc), *opts, "-out", str(out))
    return out


def reply_text(tmp_path: Path, reply: bytes) -> str:
    path = tmp_path / "reply.tsr"
    path.write_bytes(reply)
    return openssl("ts", "-reply", "-in", str(path), "-text").stdout.decode()


def ts_verify(tmp_path: Path, query: Path, reply: bytes, pki: PKI, tsa_cert: x509.Certificate | None = None,
              *extra: str) -> subprocess.CompletedProcess[bytes]:
    path = tmp_path / "verify.tsr"
    path.write_bytes(reply)
    args = ["ts", "-verify", "-queryfile", str(query), "-in", str(path), "-CAfile", str(pki.ca_pem)]
    if tsa_cert is not None:
        untrusted = tmp_path / "tsa.pem"
        untrusted.write_bytes(tsa_cert.public_bytes(serialization.Encoding.PEM))
        args += ["-untrusted", str(untrusted)]
    return openssl(*args, *extra, check=False)


@pytest.fixture
def tsa(services: Any, pki: PKI) -> Any:
    """``tsa(name="TSA", **props)``: adds a TimeStampSigner, returns its certificate."""
    def make(name: str = "TSA", **props: Any) -> x509.Certificate:
        return add_tsa(services, pki, name, **props)
    return make


class Kit:
    """The helpers above, for test modules (conftest is not importable under importlib mode)."""

    POLICY = POLICY
    tsa_certificate = staticmethod(tsa_certificate)
    add_tsa = staticmethod(add_tsa)
    process = staticmethod(process)
    worker_process = staticmethod(worker_process)
    openssl = staticmethod(openssl)
    ts_query = staticmethod(ts_query)
    reply_text = staticmethod(reply_text)
    ts_verify = staticmethod(ts_verify)


@pytest.fixture
def kit() -> type[Kit]:
    return Kit

"""The development PKI: a CA, the certificates ``signpeer init`` makes, and their files.

``signpeer init`` uses it for the development CA, the TLS server certificate, the first
administrator's client certificate and the demo signer's certificate; tests use it for peers
and clients. Issuing itself (profiles, extensions) is :mod:`signpeer_core.issuing`, which the
CA side of the peer protocol and the one-time key connectors use in production.
P-256 keys by default: their TLS handshakes are 20-35 % cheaper than RSA-2048 ones.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12

from signpeer_core.issuing import issue as issue  # the development CA issues with the production code
from signpeer_core.issuing import now, sign_certificate
from signpeer_core.keys import PrivateKey
from signpeer_core.names import parse_dn


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(subject_dn: str, key: PrivateKey | None = None, days: int = 3650) -> tuple[PrivateKey, x509.Certificate]:
    """A self-signed CA certificate (and a new P-256 key unless one is given)."""
    key = key or new_key()
    name = parse_dn(subject_dn)
    pub = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - dt.timedelta(minutes=5))
        .not_valid_after(now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
    )
    return key, sign_certificate(builder, key)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def pkcs12_bundle(name: str, key: PrivateKey, cert: x509.Certificate, cas: list[x509.Certificate], password: str) -> bytes:
    """A PKCS#12 file a browser can import (PBES2/AES, readable by current browsers and openssl)."""
    enc = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(50000)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password.encode())
    )
    return pkcs12.serialize_key_and_certificates(name.encode(), key, cert, cas, enc)


def load_key_pem(path: Path, password: bytes | None = None) -> PrivateKey:
    return serialization.load_pem_private_key(path.read_bytes(), password)  # type: ignore[return-value]  # dev PKI keys: EC/RSA


def load_cert_pem(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())

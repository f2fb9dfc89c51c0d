"""signclient's ``-truststore``/``-keystore`` files: Java keystores (JKS, read with pyjks),
PKCS#12 and PEM, turned into what Python's TLS stack loads.

SignServer's signclient takes ``-truststore <file> -truststorepwd <pwd>`` (the CAs trusted for
the server) and ``-keystore <file> -keystorepwd <pwd> [-keyalias <alias>]`` (the TLS client
certificate and key). Python's ``ssl`` loads PEM files only, so :func:`client_tls_files` writes
the trusted certificates and the client certificate chain as PEM into a private temporary
directory and the key **encrypted** with a one-time random password (the plaintext key never
reaches the disk); the caller passes that password to the TLS context and removes the directory
right after loading.

The type is recognised from the content (JKS and JCEKS magic numbers, ``-----BEGIN``, else
PKCS#12) unless given (``-keystoretype``/``-truststoretype``: ``JKS``, ``PKCS12``, ``PEM``).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from signpeer_core.errors import BadRequestError

TYPES = ("JKS", "PKCS12", "PEM")
_JKS_MAGIC = (b"\xfe\xed\xfe\xed", b"\xce\xce\xce\xce")  # JKS, JCEKS


@dataclass
class Store:
    """What one keystore file holds: trusted certificates and key entries (alias → key, chain)."""

    trusted: list[x509.Certificate] = field(default_factory=list)
    keys: dict[str, tuple[Any, list[x509.Certificate]]] = field(default_factory=dict)


@dataclass
class TLSFiles:
    """PEM files for :class:`~signpeer_core.httpclient.HttpClient`; ``key_password`` opens ``key``."""

    cafile: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    key_password: str | None = None


def store_type(data: bytes, given: str | None = None) -> str:
    if given:
        kind = given.strip().upper().replace("PKCS#12", "PKCS12").replace("P12", "PKCS12")
        if kind == "JCEKS":
            kind = "JKS"
        if kind not in TYPES:
            raise BadRequestError(f"keystore type '{given}' is not supported; use one of {', '.join(TYPES)}")
        return kind
    if data[:4] in _JKS_MAGIC:
        return "JKS"
    if b"-----BEGIN" in data[:4096]:
        return "PEM"
    return "PKCS12"


def load_store(path: str, password: str | None, kind: str | None = None, what: str = "-keystore") -> Store:
    """Read a JKS, PKCS#12 or PEM keystore; a wrong password or a damaged file is a
    :class:`BadRequestError` naming the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BadRequestError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    kind = store_type(data, kind)
    if kind == "PEM":
        return _load_pem(data, password, path, what)
    if password is None:
        raise BadRequestError(f"Missing {what}pwd: the {kind} file {path} needs its password")
    if kind == "JKS":
        return _load_jks(data, password, path, what)
    try:
        bundle = pkcs12.load_pkcs12(data, password.encode())
    except ValueError as exc:
        raise BadRequestError(f"cannot open {what} {path} as PKCS#12 (wrong {what}pwd, or not a PKCS#12 "
                              f"file: {exc})") from None
    store = Store(trusted=[c.certificate for c in bundle.additional_certs])
    if bundle.key is not None and bundle.cert is not None:
        alias = (bundle.cert.friendly_name or b"1").decode(errors="replace")
        store.keys[alias] = (bundle.key, [bundle.cert.certificate, *store.trusted])
    return store


def _load_jks(data: bytes, password: str, path: str, what: str) -> Store:
    import jks  # pyjks: the Java keystore format

    try:
        keystore = jks.KeyStore.loads(data, password, try_decrypt_keys=True)
    except (jks.util.KeystoreSignatureException, jks.util.BadKeystoreFormatException, ValueError) as exc:
        raise BadRequestError(f"cannot open {what} {path} as a Java keystore (wrong {what}pwd?): {exc}") from None
    store = Store(trusted=[x509.load_der_x509_certificate(e.cert) for e in keystore.certs.values()])
    for alias, entry in keystore.private_keys.items():
        if not entry.is_decrypted():
            try:
                entry.decrypt(password)
            except jks.util.DecryptionFailureException:
                raise BadRequestError(f"the key '{alias}' of {what} {path} has another password than the "
                                      "keystore; signclient uses one password for both") from None
        key = serialization.load_der_private_key(entry.pkey_pkcs8, None)
        chain = [x509.load_der_x509_certificate(der) for _, der in entry.cert_chain]
        store.keys[alias] = (key, chain)
    return store


def _load_pem(data: bytes, password: str | None, path: str, what: str) -> Store:
    try:
        certs = x509.load_pem_x509_certificates(data) if b"CERTIFICATE-----" in data else []
    except ValueError as exc:
        raise BadRequestError(f"{what} {path} holds a damaged PEM certificate: {exc}") from None
    if b"PRIVATE KEY-----" not in data:
        return Store(trusted=certs)
    try:
        key = serialization.load_pem_private_key(data, password.encode() if password else None)
    except (ValueError, TypeError) as exc:
        raise BadRequestError(f"cannot read the private key in {what} {path} (wrong {what}pwd?): {exc}") from None
    return Store(keys={"1": (key, certs)})


def client_tls_files(directory: Path, truststore: str | None, truststorepwd: str | None,
                     keystore: str | None, keystorepwd: str | None, keyalias: str | None = None,
                     truststoretype: str | None = None, keystoretype: str | None = None) -> TLSFiles:
    """Write the PEM files for the given stores into ``directory`` (made private here)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    out = TLSFiles()
    if truststore:
        trusted = load_store(truststore, truststorepwd, truststoretype, "-truststore")
        certs = trusted.trusted + [c for _, chain in trusted.keys.values() for c in chain[1:]]
        if not certs:
            raise BadRequestError(f"-truststore {truststore} holds no trusted certificate")
        out.cafile = directory / "trusted.pem"
        out.cafile.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    if keystore:
        store = load_store(keystore, keystorepwd, keystoretype, "-keystore")
        if not store.keys:
            raise BadRequestError(f"-keystore {keystore} holds no private key entry")
        if keyalias:
            match = {a.lower(): a for a in store.keys}.get(keyalias.lower())
            if match is None:
                raise BadRequestError(f"-keystore {keystore} has no key '{keyalias}'; it has: "
                                      f"{', '.join(sorted(store.keys))}")
            key, chain = store.keys[match]
        else:
            key, chain = next(iter(store.keys.values()))  # as signclient: the first alias
        if not chain:
            raise BadRequestError(f"the key entry of -keystore {keystore} has no certificate")
        out.key_password = secrets.token_urlsafe(24)
        out.key = directory / "client-key.pem"
        fd = os.open(out.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(out.key_password.encode())))
        out.cert = directory / "client.pem"
        out.cert.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    return out

"""The trusted client CAs: one per subject DN, and the key that issued a client certificate.

Rules that name a certificate by serial number and issuer DN (``WSADMINS``, ``WSPEERS``,
authorized clients; SignServer's format) would let a second trusted CA with the same DN mint
a matching certificate. So:

* the server refuses to start when two different client CA certificates share a subject DN
  (:func:`check_unique`, naming both files);
* each rule records the key identifier of the CA that was trusted when it was made (the
  SHA-1 key identifier of RFC 5280 §4.2.1.2 over the CA's public key, as in its
  subjectKeyIdentifier), stored beside the SignServer-format rule; a rule with a recorded key
  matches only certificates that key issued (:func:`issuer_key_id`: found by the issuer DN
  among the trusted CAs and confirmed by the certificate's signature). A re-keyed CA is then a
  visible, deliberate change: its rules are re-added.

The trusted CAs of a server process are set once at start (:func:`set_trusted`); commands read
them from the settings' client CA files (:func:`load`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from signpeer_core.errors import BadRequestError, ConfigurationError
from signpeer_core.names import format_dn, parse_dn


def key_id(cert: x509.Certificate) -> str:
    """The CA's key identifier in lower-case hex (the SHA-1 method over its public key)."""
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest.hex()


def _dn_key(name: x509.Name) -> frozenset[tuple[str, str]]:
    return frozenset((a.oid.dotted_string, " ".join(str(a.value).split()).casefold()) for a in name)


@dataclass
class TrustedCAs:
    """The client CA certificates with the file each came from."""

    certificates: list[tuple[Path, x509.Certificate]] = field(default_factory=list)

    def check_unique(self) -> None:
        """Refuse two different CA certificates with one subject DN (naming both files)."""
        seen: dict[frozenset[tuple[str, str]], tuple[Path, x509.Certificate]] = {}
        for path, cert in self.certificates:
            dn = _dn_key(cert.subject)
            first = seen.get(dn)
            if first is None:
                seen[dn] = (path, cert)
                continue
            if first[1].fingerprint(hashes.SHA256()) == cert.fingerprint(hashes.SHA256()):
                continue  # the same certificate twice
            raise ConfigurationError(
                f"two trusted client CAs have the subject DN '{format_dn(cert.subject)}': one in {first[0]} and "
                f"another in {path}. Client rules name certificates by issuer DN, so either CA could issue a "
                f"certificate matching them; keep one of the two (a re-keyed CA replaces the old one, and its "
                f"rules are added again)")
            # (never reached twice: the first duplicate stops the start)

    def by_dn(self, dn: x509.Name | str) -> list[x509.Certificate]:
        name = dn if isinstance(dn, x509.Name) else parse_dn(dn)
        wanted = _dn_key(name)
        return [cert for _, cert in self.certificates if _dn_key(cert.subject) == wanted]

    def key_id_for_issuer(self, issuer_dn: str) -> str:
        """The key identifier of the trusted CA named ``issuer_dn``; empty when none is trusted."""
        try:
            found = self.by_dn(issuer_dn)
        except BadRequestError:  # a DN that does not parse names no trusted CA
            return ""
        return key_id(found[0]) if len(found) == 1 else ""

    def issuer_key_id(self, cert: x509.Certificate) -> str:
        """The key identifier of the trusted CA that issued ``cert`` (name and signature); empty
        when no trusted CA did."""
        for ca in self.by_dn(cert.issuer):
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return key_id(ca)
        return ""


def load(paths: Iterable[Path]) -> TrustedCAs:
    """The certificates of the client CA files that exist (a missing default file is no CA)."""
    trusted = TrustedCAs()
    for path in paths:
        if not path.is_file():
            continue
        try:
            certs = x509.load_pem_x509_certificates(path.read_bytes())
        except (ValueError, OSError) as exc:
            raise ConfigurationError(f"client CA file {path} holds no usable PEM certificate: {exc}") from None
        trusted.certificates.extend((path, cert) for cert in certs)
    return trusted


_lock = threading.Lock()
_trusted: TrustedCAs | None = None


def set_trusted(trusted: TrustedCAs | None) -> None:
    """The client CAs this server process verifies client certificates against (set at start)."""
    global _trusted
    with _lock:
        _trusted = trusted


def trusted() -> TrustedCAs | None:
    return _trusted


def issuer_key_id(cert: x509.Certificate) -> str:
    """The key identifier of the trusted CA that issued ``cert`` in this process; empty when the
    process has no trusted CAs set (commands) or none issued it."""
    current = _trusted
    return current.issuer_key_id(cert) if current is not None else ""

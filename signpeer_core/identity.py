"""Who a TLS client certificate is: subject, issuer, serial number and the rule that matches it.

One identity for every place that authorizes by certificate: the REST admin endpoints, the
Admin Web and the peer endpoint. The issuer is the tokenized issuer DN SignServer writes in its
rules and log lines (:func:`signpeer_core.names.tokenized_issuer_dn`), so
``identity.rule`` compares exactly (spec §1.2) with the rules of :mod:`signpeer_core.roles`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from signpeer_core import clientcas
from signpeer_core.audit import Admin
from signpeer_core.clientrules import ClientRule
from signpeer_core.names import format_dn, tokenized_issuer_dn


@dataclass(frozen=True)
class CertificateIdentity:
    """The client certificate's subject, tokenized issuer DN and serial (and the certificate)."""

    subject: str
    issuer: str
    serial: int
    certificate: x509.Certificate | None = None
    #: The key identifier of the trusted client CA that issued the certificate (clientcas.py).
    issuer_key_id: str = ""

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> CertificateIdentity:
        return cls(format_dn(cert.subject), tokenized_issuer_dn(cert), cert.serial_number, cert,
                   clientcas.issuer_key_id(cert))

    @property
    def serial_hex(self) -> str:
        """Lower-case hex without leading zeros, as in the rules."""
        return format(self.serial, "x")

    @property
    def rule(self) -> ClientRule:
        """The (serial, issuer) rule that authorizes this certificate."""
        return ClientRule(self.serial, self.issuer, self.issuer_key_id)

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 over the certificate (empty without one)."""
        return self.certificate.fingerprint(hashes.SHA256()) if self.certificate is not None else b""

    def as_admin(self) -> Admin:
        """The audit log's ADMINISTRATOR / ISSUER / SERIAL_NUMBER for what this identity changes."""
        return Admin(name=self.subject, issuer=self.issuer, serial=self.serial_hex)

    def as_json(self) -> dict[str, str]:
        return {"subject": self.subject, "issuer": self.issuer, "serial": self.serial_hex}

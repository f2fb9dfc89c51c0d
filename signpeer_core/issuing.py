"""An issuing CA for the CA side of the peer protocol and of RA mode: verify a CSR, issue, chain.

Used by ``signpeer connector renew`` (peerconnector) and ``signpeer ra serve`` (onetimecrypto).

Issuing itself is :func:`signpeer_core.devpki.issue` (profiles ``signer``, ``client``,
``server``, ``ca``; subject key identifier and authority key identifier always present). This
module adds what a CA must do around it: refuse a CSR whose self-signature does not verify (a
request for a key the requester does not hold), and return the chain leaf first, ready to be
installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signpeer_core import devpki
from signpeer_core.errors import SignpeerError
from signpeer_core.keys import PrivateKey


class IssuingError(SignpeerError):
    """The CA refused to issue (bad CSR, unusable CA files); as an HTTP status, 502 (a CA refused)."""

    status = 502


@dataclass
class IssuingCA:
    """A CA key and certificate, plus the certificates above it (sent along with each leaf)."""

    key: PrivateKey
    certificate: x509.Certificate
    chain: list[x509.Certificate] = field(default_factory=list)  # issuers of ``certificate``, if any
    validity_days: int = 365
    profile: str = "signer"

    def __post_init__(self) -> None:
        if self.profile not in devpki.PROFILES:
            raise IssuingError(f"unknown certificate profile '{self.profile}'; use one of {', '.join(devpki.PROFILES)}")
        if self.validity_days <= 0:
            raise IssuingError("validity days must be a positive number")

    @classmethod
    def from_files(
        cls, cert: str | Path, key: str | Path, validity_days: int = 365, profile: str = "signer",
        key_password: str | None = None,
    ) -> IssuingCA:
        """Load the CA from PEM files; ``cert`` may hold the CA certificate followed by its issuers."""
        try:
            certs = x509.load_pem_x509_certificates(Path(cert).read_bytes())
            ca_key = serialization.load_pem_private_key(Path(key).read_bytes(),
                                                        key_password.encode() if key_password else None)
        except (OSError, ValueError, TypeError) as exc:
            raise IssuingError(f"cannot load the issuing CA (--issuer-cert {cert}, --issuer-key {key}): {exc}") from exc
        if _key_mismatch(ca_key, certs[0]):  # type: ignore[arg-type]
            raise IssuingError(f"the issuer key {key} does not belong to the certificate in {cert}")
        return cls(ca_key, certs[0], certs[1:], validity_days, profile)  # type: ignore[arg-type]

    def issue(self, csr: x509.CertificateSigningRequest) -> list[x509.Certificate]:
        """Verify ``csr`` and issue its certificate; returns the chain, leaf first."""
        if not csr.is_signature_valid:
            raise IssuingError("the CSR's signature does not verify: it was not signed by the key it names")
        leaf = devpki.issue(self.key, self.certificate, csr.subject, csr.public_key(),  # type: ignore[arg-type]
                            profile=self.profile, days=self.validity_days)
        return [leaf, self.certificate, *self.chain]


def _key_mismatch(key: PrivateKey, cert: x509.Certificate) -> bool:
    from signpeer_core.keys import public_key_der

    return public_key_der(key) != public_key_der(cert)

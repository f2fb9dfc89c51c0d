"""Issuing X.509 certificates: the profiles (server, client, signer, ca), their extensions, and
an issuing CA.

:func:`issue` builds and signs a certificate (subject key identifier and authority key identifier
always present); the development PKI (:mod:`signpeer_core.devpki`) and the one-time key CA
connectors use it. :class:`IssuingCA` is the CA side of the peer protocol and of RA mode
(``signpeer connector renew``, ``signpeer ra serve``): it refuses a CSR whose self-signature does
not verify (a request for a key the requester does not hold) and returns the chain leaf first,
ready to be installed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes, PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from signpeer_core.errors import SignpeerError
from signpeer_core.keys import PrivateKey, default_signature_algorithm, signature_algorithm
from signpeer_core.names import parse_dn

PROFILES = ("server", "client", "signer", "ca")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def sign_certificate(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.Certificate:
    """Sign with the key's default algorithm (SHA-256 for P-256 and RSA, none for Ed25519)."""
    alg = signature_algorithm(default_signature_algorithm(key))
    return builder.sign(key, alg.hash_instance())  # type: ignore[arg-type]  # cryptography's stubs leave out SHA-1


def issue(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    subject: str | x509.Name,
    public_key: CertificatePublicKeyTypes,
    profile: str = "signer",
    days: int = 365,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    serial: int | None = None,
    general_names: tuple[x509.GeneralName, ...] = (),
) -> x509.Certificate:
    """Issue a certificate for ``public_key``. ``profile``: server, client, signer or ca.

    ``general_names`` are added to the subject alternative names (one-time key certificates
    carry rfc822Name, URI, UPN, ... from their templates).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; use one of {PROFILES}")
    name = subject if isinstance(subject, x509.Name) else parse_dn(subject)
    start = not_before or (now() - dt.timedelta(minutes=5))
    end = not_after or (now() + dt.timedelta(days=days))
    builder = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(ca_cert.subject).public_key(public_key)
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=profile == "ca", path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)  # type: ignore[arg-type]  # a CA certificate holds a signing key
    )
    ku = dict(digital_signature=True, content_commitment=profile == "signer", key_encipherment=False,
              data_encipherment=False, key_agreement=False, key_cert_sign=profile == "ca", crl_sign=profile == "ca",
              encipher_only=False, decipher_only=False)
    builder = builder.add_extension(x509.KeyUsage(**ku), critical=True)
    if profile == "server":
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif profile == "client":
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ip_addresses]
    sans += list(general_names)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return sign_certificate(builder, ca_key)


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
        if self.profile not in PROFILES:
            raise IssuingError(f"unknown certificate profile '{self.profile}'; use one of {', '.join(PROFILES)}")
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
        if _key_mismatch(ca_key, certs[0]):
            raise IssuingError(f"the issuer key {key} does not belong to the certificate in {cert}")
        if not isinstance(ca_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
            raise IssuingError(f"the issuer key {key} is not an RSA, EC or Ed25519 key")
        return cls(ca_key, certs[0], certs[1:], validity_days, profile)

    def issue(self, csr: x509.CertificateSigningRequest) -> list[x509.Certificate]:
        """Verify ``csr`` and issue its certificate; returns the chain, leaf first."""
        if not csr.is_signature_valid:
            raise IssuingError("the CSR's signature does not verify: it was not signed by the key it names")
        leaf = issue(self.key, self.certificate, csr.subject, csr.public_key(),
                            profile=self.profile, days=self.validity_days)
        return [leaf, self.certificate, *self.chain]


def _key_mismatch(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    from signpeer_core.keys import public_key_der

    return public_key_der(key) != public_key_der(cert)

"""Issuing X.509 certificates: the profiles (server, client, signer, ca) and their extensions.

Used by the CA side of the peer protocol (``signpeer connector``), by the one-time key CA
connectors and by the development PKI (:mod:`signpeer_core.devpki`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from signpeer_core.keys import PrivateKey, PublicKey, default_signature_algorithm, signature_algorithm
from signpeer_core.names import parse_dn

PROFILES = ("server", "client", "signer", "ca")


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def sign_certificate(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.Certificate:
    """Sign with the key's default algorithm (SHA-256 for P-256 and RSA, none for Ed25519)."""
    alg = signature_algorithm(default_signature_algorithm(key))
    return builder.sign(key, alg.hash_instance())  # type: ignore[arg-type]


def issue(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    subject: str | x509.Name,
    public_key: PublicKey,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
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

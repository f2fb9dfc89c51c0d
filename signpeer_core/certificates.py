"""Signer certificates in the configuration: the property codec and the configured chain.

``SIGNERCERT`` and ``SIGNERCERTCHAIN`` hold certificates as base64 DER joined by ``;`` (one line,
so property files keep it) or as PEM. :func:`configured_chain` merges the two into the chain a
worker signs with, leaf first.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signpeer_core.errors import ConfigurationError


def decode_certificate_property(value: str) -> list[x509.Certificate]:
    """Certificates from a SIGNERCERT/SIGNERCERTCHAIN value: PEM, or base64 DER joined by ';'."""
    value = value.strip()
    if not value:
        return []
    try:
        if "-----BEGIN" in value:
            return x509.load_pem_x509_certificates(value.encode())
        return [x509.load_der_x509_certificate(base64.b64decode(part)) for part in value.split(";") if part.strip()]
    except ValueError as exc:
        raise ConfigurationError(f"bad certificate in the configuration: {exc}") from exc


def encode_certificate_property(certs: list[x509.Certificate]) -> str:
    """The stored form: base64 DER, ';'-separated (one line, so property files keep it)."""
    return ";".join(base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in certs)


def merge_chain(leaf: list[x509.Certificate], chain: list[x509.Certificate]) -> list[x509.Certificate]:
    """``SIGNERCERT`` (its first certificate) in front of ``SIGNERCERTCHAIN`` without repeating it."""
    if not leaf:
        return list(chain)
    return leaf[:1] + [c for c in chain if c != leaf[0]]


def configured_chain(config: Mapping[str, str]) -> list[x509.Certificate]:
    """The signer chain a worker configuration names, leaf first (empty when it names none)."""
    return merge_chain(decode_certificate_property(config.get("SIGNERCERT", "")),
                       decode_certificate_property(config.get("SIGNERCERTCHAIN", "")))


def build_chain(leaf: x509.Certificate, pool: list[x509.Certificate]) -> list[x509.Certificate]:
    """``leaf`` followed by its issuers found in ``pool`` (by name, confirmed by signature if possible)."""
    chain = [leaf]
    current = leaf
    while current.issuer != current.subject and len(chain) < 16:
        candidates = [c for c in pool if c.subject == current.issuer and c not in chain]
        if not candidates:
            break
        chosen = candidates[0]
        for candidate in candidates:
            try:
                current.verify_directly_issued_by(candidate)
            except Exception:  # wrong key, unsupported algorithm: fall back to the name match
                continue
            chosen = candidate
            break
        chain.append(chosen)
        current = chosen
    return chain


def order_chain(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    """Certificates without an order (a token's objects) as a chain: the leaf (the one that issued
    none of the others), then each issuer; certificates outside that chain follow as they came."""
    if len(certs) <= 1:
        return list(certs)
    issuers = {c.issuer for c in certs if c.issuer != c.subject}
    leaf = next((c for c in certs if c.subject not in issuers), certs[0])
    chain = build_chain(leaf, certs)
    return chain + [c for c in certs if c not in chain]

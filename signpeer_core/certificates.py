"""Signer certificates in the configuration: the property codec and the configured chain.

``SIGNERCERT`` and ``SIGNERCERTCHAIN`` hold certificates as base64 DER joined by ``;`` (one line,
so property files keep it) or as PEM. :func:`configured_chain` merges the two into the chain a
worker signs with, leaf first. :func:`check_signer_chain` is what an install accepts.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
from collections.abc import Mapping

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from signpeer_core.errors import BadRequestError, ConfigurationError
from signpeer_core.names import format_dn


def decode_certificate_property(value: str) -> list[x509.Certificate]:
    """Certificates from a SIGNERCERT/SIGNERCERTCHAIN value: PEM, or base64 DER joined by ';'."""
    value = value.strip()
    if not value:
        return []
    try:
        if "-----BEGIN" in value:
            return x509.load_pem_x509_certificates(value.encode())
        return [_der_certificate(part.strip()) for part in value.split(";") if part.strip()]
    except ValueError as exc:
        raise ConfigurationError(f"bad certificate in the configuration: {exc}") from exc


@functools.lru_cache(maxsize=1024)
def _der_certificate(part: str) -> x509.Certificate:
    """One base64 DER certificate, parsed once per process: the CA certificates that every
    worker's chain repeats (and a leaf shared by several workers) are one object in memory, not
    one per worker (certificates are immutable)."""
    return x509.load_der_x509_certificate(base64.b64decode(part))


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


def build_chain(leaf: x509.Certificate, pool: list[x509.Certificate],
                verified: dict[tuple[x509.Certificate, x509.Certificate], bool] | None = None,
                ) -> list[x509.Certificate]:
    """``leaf`` followed by its issuers found in ``pool`` (by name, confirmed by signature if possible).

    ``verified``: whether a certificate's signature was made by a candidate's key, by (certificate,
    candidate), as checked before and recorded here (a keystore read again checks each pair once)."""
    chain = [leaf]
    current = leaf
    while current.issuer != current.subject and len(chain) < 16:
        candidates = [c for c in pool if c.subject == current.issuer and c not in chain]
        if not candidates:
            break
        chosen = candidates[0]
        for candidate in candidates:
            issued = verified.get((current, candidate)) if verified is not None else None
            if issued is None:
                try:
                    current.verify_directly_issued_by(candidate)
                    issued = True
                except Exception:  # wrong key, unsupported algorithm: fall back to the name match
                    issued = False
                if verified is not None:
                    verified[(current, candidate)] = issued
            if not issued:
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


#: The longest signer chain an install accepts (leaf, intermediates, root). Every CMS answer
#: carries the chain, so an unbounded one would make every response huge.
MAX_CHAIN_LENGTH = 10
#: How far in the future a new certificate's notBefore may be (clock skew between CA and server).
CLOCK_SKEW = dt.timedelta(minutes=5)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def check_signer_chain(certs: list[x509.Certificate], now: dt.datetime | None = None) -> None:
    """Refuse (400) a signer chain that cannot sign: too long, out of order or not linked by
    signatures, a leaf that is a CA, an issuer that is not, or a certificate not valid now."""
    if not certs:
        raise BadRequestError("no certificate given")
    if len(certs) > MAX_CHAIN_LENGTH:
        raise BadRequestError(f"the chain has {len(certs)} certificates; at most {MAX_CHAIN_LENGTH} are accepted "
                              "(the leaf and its issuers, nothing else)")
    now = now or dt.datetime.now(dt.UTC)
    for position, cert in enumerate(certs):
        what = "the signer certificate" if position == 0 else f"certificate {position + 1} of the chain"
        subject = format_dn(cert.subject)
        if cert.not_valid_after_utc < now:
            raise BadRequestError(f"{what} ({subject}) expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
        if cert.not_valid_before_utc > now + CLOCK_SKEW:
            raise BadRequestError(f"{what} ({subject}) is not valid before "
                                  f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC")
        if position == 0 and _is_ca(cert):
            raise BadRequestError(f"the signer certificate ({subject}) is a CA certificate (basic constraints "
                                  "CA:TRUE); install the certificate issued for the signing key")
        if position > 0 and not _is_ca(cert):
            raise BadRequestError(f"{what} ({subject}) is not a CA certificate (no basic constraints CA:TRUE), "
                                  "so it cannot have issued the one before it; give the chain leaf first, then "
                                  "each issuer")
        if position + 1 < len(certs):
            issuer = certs[position + 1]
            try:
                cert.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature):
                raise BadRequestError(
                    f"{what} ({subject}) was not issued by the next certificate in the chain "
                    f"({format_dn(issuer.subject)}); give the chain leaf first, then each issuer in order") from None

"""Certificate rules of the WSADMINS / WSAUDITORS / WSARCHIVEAUDITORS / WSPEERS global properties.

Stored exactly as SignServer stores them (spec §1.2): ``<serial hex>,<issuer DN>;`` entries,
serial in lower-case hex without leading zeros, split at the first comma, issuer compared as
an exact string. The issuer of a certificate is written the way SignServer's
``getTokenizedIssuerDNFromCert`` writes it: most specific RDN first, joined by ``", "``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cryptography import x509

from signpeer_core.errors import BadRequestError
from signpeer_core.keys import load_certificates
from signpeer_core.names import tokenized_issuer_dn

log = logging.getLogger("signpeer.auth")


@dataclass(frozen=True, order=True)
class ClientRule:
    """One (serial number, issuer DN) rule; equality is exact, as in SignServer."""

    serial: int
    issuer_dn: str

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")

    def serialize(self) -> str:
        return f"{self.serial_hex},{self.issuer_dn};"

    @classmethod
    def for_certificate(cls, cert: x509.Certificate) -> ClientRule:
        return cls(cert.serial_number, tokenized_issuer_dn(cert))


def parse_serial(text: str) -> int:
    """A serial number in hex (any case, optional leading zeros or 0x)."""
    raw = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        value = int(raw, 16)
    except ValueError:
        raise BadRequestError(f"Illegal serial number specified: {text}") from None
    if value < 0:
        raise BadRequestError(f"Illegal serial number specified: {text}")
    return value


def parse_rules(value: str | None) -> list[ClientRule]:
    """Rules from a property value; malformed entries are logged and skipped."""
    rules: list[ClientRule] = []
    for entry in (value or "").split(";"):
        entry = entry.strip()
        if not entry:
            continue
        if "," not in entry:
            log.warning("Malformed admin entry: %s", entry)
            continue
        serial_text, issuer = entry.split(",", 1)
        try:
            serial = parse_serial(serial_text)
        except BadRequestError:
            log.warning("Malformed serial number: %s", serial_text)
            continue
        rule = ClientRule(serial, issuer.strip())
        if rule not in rules:
            rules.append(rule)
    return rules


def serialize_rules(rules: list[ClientRule]) -> str:
    return "".join(rule.serialize() for rule in rules)


def rule_from_certificate_file(data: bytes) -> ClientRule:
    """The rule for a certificate given as PEM or DER (``-add -cert <file>``)."""
    certs = load_certificates(data)
    if len(certs) != 1:
        raise BadRequestError(f"expected one certificate, found {len(certs)}")
    return ClientRule.for_certificate(certs[0])

"""Certificate rules of the WSADMINS / WSAUDITORS / WSARCHIVEAUDITORS / WSPEERS global properties.

Stored exactly as SignServer stores them (spec §1.2): ``<serial hex>,<issuer DN>;`` entries,
serial in lower-case hex without leading zeros, split at the first comma, issuer compared as
an exact string. The issuer of a certificate is written the way SignServer's
``getTokenizedIssuerDNFromCert`` writes it: most specific RDN first, joined by ``", "``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from cryptography import x509

from signpeer_core.errors import BadRequestError
from signpeer_core.keys import load_certificates
from signpeer_core.names import tokenized_issuer_dn

log = logging.getLogger("signpeer.auth")


#: Suffix of the property beside a rule property (``WSADMINS`` → ``WSADMINS_ISSUERKEYIDS``) that
#: binds each rule's issuer to the key of the CA trusted when the rule was made:
#: ``<key id hex>:<serial hex>,<issuer DN>;`` entries (see :mod:`signpeer_core.clientcas`).
KEY_IDS_SUFFIX = "_ISSUERKEYIDS"


@dataclass(frozen=True, order=True)
class ClientRule:
    """One (serial number, issuer DN) rule; equality is exact, as in SignServer.

    ``issuer_key_id``: for a stored rule, the key identifier of the issuing CA bound when the
    rule was made (empty: not bound, the issuer DN alone decides); for a presented certificate,
    the key of the trusted CA that issued it. It does not take part in equality: :meth:`accepts`
    compares it.
    """

    serial: int
    issuer_dn: str
    issuer_key_id: str = field(default="", compare=False)

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")

    def accepts(self, presented: ClientRule) -> bool:
        """Whether this stored rule lets the presented certificate's rule in."""
        return self == presented and (not self.issuer_key_id or self.issuer_key_id == presented.issuer_key_id)

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


def parse_key_ids(value: str | None) -> dict[ClientRule, str]:
    """The issuer key bindings of a ``<PROP>_ISSUERKEYIDS`` value, by rule."""
    bound: dict[ClientRule, str] = {}
    for entry in (value or "").split(";"):
        key_id, sep, rule_text = entry.strip().partition(":")
        if not sep:
            continue
        rules = parse_rules(rule_text)
        if rules and key_id.strip():
            bound[rules[0]] = key_id.strip().lower()
    return bound


def serialize_key_ids(rules: list[ClientRule]) -> str:
    return "".join(f"{r.issuer_key_id}:{r.serialize()}" for r in rules if r.issuer_key_id)


def parse_bound_rules(value: str | None, key_ids: str | None) -> list[ClientRule]:
    """Rules of a property with the issuer keys bound to them in the property beside it."""
    bound = parse_key_ids(key_ids)
    return [ClientRule(r.serial, r.issuer_dn, bound.get(r, "")) for r in parse_rules(value)]


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


def describe_rule(rule: ClientRule) -> str:
    """One line of a ``-list``: serial, issuer DN and the bound issuer key."""
    bound = f"issuer key {rule.issuer_key_id}" if rule.issuer_key_id else "issuer key not bound"
    return f"{rule.serial_hex:<20} {rule.issuer_dn}   ({bound})"


def serialize_rules(rules: list[ClientRule]) -> str:
    return "".join(rule.serialize() for rule in rules)


def rule_from_certificate_file(data: bytes) -> ClientRule:
    """The rule for a certificate given as PEM or DER (``-add -cert <file>``)."""
    certs = load_certificates(data)
    if len(certs) != 1:
        raise BadRequestError(f"expected one certificate, found {len(certs)}")
    return ClientRule.for_certificate(certs[0])

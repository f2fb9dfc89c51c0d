"""Who is calling the Admin Web, and what they may do.

The caller is the TLS client certificate of the connection (:func:`signpeer_core.mtls.client_certificate`;
the handshake has already verified it against the server's client CA files). Its rule is
(serial number, tokenized issuer DN), matched exactly as SignServer does (spec §1.2) against
the global properties:

* ``WSADMINS`` → **Admin**: sees every page and may change things;
* ``WSAUDITORS`` → **Auditor**: sees every page, including the Audit Log, and changes nothing;
* ``WSARCHIVEAUDITORS`` → **Archive Auditor**: signpeer keeps no archive, so this role alone
  opens no page (the home page says so);
* ``ALLOWANYWSADMIN=true`` → any verified client certificate is an Admin (SignServer's "Allow
  any"); it grants neither Auditor nor Peer System;
* ``WSPEERS`` (**Peer System**) gives no Admin Web access at all: a CA's TLS client
  certificate must not be able to administer the server it renews.

As in SignServer, the Audit Log needs the Auditor role even for an Admin.

The rules are read from the database on every request, not from the process's loaded
configuration: removing an administrator takes effect on their very next click, in every
server process, without a reload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from signpeer_core.clientrules import ClientRule, parse_rules
from signpeer_core.config import global_value, is_true
from signpeer_core.keys import format_dn
from signpeer_core.storage import Admin

if TYPE_CHECKING:
    from collections.abc import Mapping

ADMIN = "Admin"
AUDITOR = "Auditor"
ARCHIVE_AUDITOR = "Archive Auditor"
PEER_SYSTEM = "Peer System"

#: Roles in display order with the global property holding each role's rules.
ROLES: tuple[tuple[str, str], ...] = (
    (ADMIN, "WSADMINS"),
    (AUDITOR, "WSAUDITORS"),
    (ARCHIVE_AUDITOR, "WSARCHIVEAUDITORS"),
    (PEER_SYSTEM, "WSPEERS"),
)

ALLOWANYWSADMIN = "ALLOWANYWSADMIN"


def rules_by_role(props: Mapping[str, str], node_id: str) -> dict[str, list[ClientRule]]:
    """The rules of every role from the global properties (node scope wins, as elsewhere)."""
    return {role: parse_rules(global_value(props, prop, node_id)) for role, prop in ROLES}


@dataclass(frozen=True)
class Caller:
    """The person (or system) behind a request's client certificate, with their roles."""

    certificate: x509.Certificate
    subject: str
    issuer: str
    serial: int
    roles: frozenset[str]
    allow_any: bool = False

    @classmethod
    def from_certificate(cls, cert: x509.Certificate, props: Mapping[str, str], node_id: str) -> Caller:
        rule = ClientRule.for_certificate(cert)
        by_role = rules_by_role(props, node_id)
        roles = {role for role, rules in by_role.items() if rule in rules}
        allow_any = is_true(global_value(props, ALLOWANYWSADMIN, node_id))
        if allow_any:
            roles.add(ADMIN)
        return cls(cert, format_dn(cert.subject), rule.issuer_dn, rule.serial, frozenset(roles), allow_any)

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")

    @property
    def rule(self) -> ClientRule:
        return ClientRule(self.serial, self.issuer)

    @property
    def fingerprint(self) -> bytes:
        return self.certificate.fingerprint(hashes.SHA256())

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    @property
    def is_auditor(self) -> bool:
        return AUDITOR in self.roles

    @property
    def can_view(self) -> bool:
        """Workers, Global Configuration, Administrators: Admins and Auditors."""
        return self.is_admin or self.is_auditor

    @property
    def has_web_access(self) -> bool:
        """Any Admin Web role; Peer System alone is not one."""
        return bool(self.roles - {PEER_SYSTEM})

    def as_admin(self) -> Admin:
        """The audit log's ADMINISTRATOR / ISSUER / SERIAL_NUMBER for this caller's changes."""
        return Admin(name=self.subject, issuer=self.issuer, serial=self.serial_hex)

    def role_names(self) -> str:
        return ", ".join(role for role, _ in ROLES if role in self.roles) or "none"

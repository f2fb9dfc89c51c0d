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

from signpeer_core.api import (
    ADMIN,
    ALLOWANYWSADMIN,
    ARCHIVE_AUDITOR,
    AUDITOR,
    PEER_SYSTEM,
    ROLES,
    CertificateIdentity,
    allow_any_admin,
    roles_of,
    rules_by_role,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from cryptography import x509

__all__ = ["ADMIN", "ALLOWANYWSADMIN", "ARCHIVE_AUDITOR", "AUDITOR", "PEER_SYSTEM", "ROLES", "Caller", "rules_by_role"]


@dataclass(frozen=True)
class Caller(CertificateIdentity):
    """The person (or system) behind a request's client certificate, with their roles."""

    roles: frozenset[str] = frozenset()
    allow_any: bool = False

    @classmethod
    def from_certificate(cls, cert: x509.Certificate, props: Mapping[str, str] | None = None,
                         node_id: str = "") -> Caller:
        """The identity with the roles the global properties ``props`` give it."""
        identity = CertificateIdentity.from_certificate(cert)
        props = props or {}
        return cls(identity.subject, identity.issuer, identity.serial, cert, identity.issuer_key_id,
                   roles_of(identity.rule, props, node_id), allow_any_admin(props, node_id))

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

    def role_names(self) -> str:
        return ", ".join(role for role, _ in ROLES if role in self.roles) or "none"

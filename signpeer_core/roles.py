"""The roles a certificate can hold, and the global properties holding each role's rules.

* ``WSADMINS`` → **Admin** (``ALLOWANYWSADMIN=true`` makes any verified client certificate an
  Admin of the Admin Web);
* ``WSAUDITORS`` → **Auditor**;
* ``WSARCHIVEAUDITORS`` → **Archive Auditor**;
* ``WSPEERS`` → **Peer System** (a CA's connector; it grants no administration).

Rules are ``<serial hex>,<issuer DN>;`` entries (:mod:`signpeer_core.clientrules`); a property is
read with node scope winning over global scope, as every global property.
"""

from __future__ import annotations

from collections.abc import Mapping

from signpeer_core.clientrules import KEY_IDS_SUFFIX, ClientRule, parse_bound_rules
from signpeer_core.config import global_value, is_true

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
ROLE_PROPERTY: dict[str, str] = dict(ROLES)

ALLOWANYWSADMIN = "ALLOWANYWSADMIN"


def role_rules(prop: str, props: Mapping[str, str], node_id: str) -> list[ClientRule]:
    """The rules of one property, with their bound issuer keys (``<prop>_ISSUERKEYIDS``)."""
    return parse_bound_rules(global_value(props, prop, node_id), global_value(props, prop + KEY_IDS_SUFFIX, node_id))


def rules_by_role(props: Mapping[str, str], node_id: str) -> dict[str, list[ClientRule]]:
    """The rules of every role from the global properties (node scope wins, as elsewhere)."""
    return {role: role_rules(prop, props, node_id) for role, prop in ROLES}


def holds(role: str, rule: ClientRule, props: Mapping[str, str], node_id: str) -> bool:
    """Whether ``rule`` is listed for ``role`` (no "allow any": see :func:`roles_of`); a stored
    rule bound to an issuer key accepts only certificates that key issued."""
    return any(r.accepts(rule) for r in role_rules(ROLE_PROPERTY[role], props, node_id))


def allow_any_admin(props: Mapping[str, str], node_id: str) -> bool:
    """``ALLOWANYWSADMIN=true``: any verified client certificate is an Admin (SignServer's "Allow any")."""
    return is_true(global_value(props, ALLOWANYWSADMIN, node_id))


def roles_of(rule: ClientRule, props: Mapping[str, str], node_id: str) -> frozenset[str]:
    """Every role ``rule`` holds, Admin included when "Allow any" is on."""
    roles = {role for role, rules in rules_by_role(props, node_id).items() if any(r.accepts(rule) for r in rules)}
    if allow_any_admin(props, node_id):
        roles.add(ADMIN)
    return frozenset(roles)

"""Peer authorization exactly as SignServer decides it (spec §5.2).

A call is allowed when the global property ``PEERS_INCOMING_ENABLED`` is a case-insensitive
``true`` **and** the client certificate's (serial number, tokenized issuer DN) is one of the
Peer System rules in ``WSPEERS``. ``ALLOWANYWSADMIN`` and ``WSADMINS`` play no part. A refusal
logs ``Denied peer access to <serial hex> issuer: '<issuer DN>'`` — the line administrators
copy the rule from — and answers 403 with "Unauthorized" in the body.

Why there is no authentication cache with a lifetime (SignServer's
``peerconnector.incoming.authcachetime``, 60 s): the decision is two dictionary look-ups in the
process's in-memory global properties, so it is made afresh on every call. A rule added or
removed therefore takes effect on the next call after the process reloads its configuration.
``signpeer wspeersystems`` and ``signpeer peers authorize`` bump the configuration generation,
so every server process reloads within its ``reload_poll_interval`` (1 s by default) without an
explicit ``signpeer reload``; a connection kept open across the change gets the new answer.

Only the parsing is cached: the parsed rule set per ``WSPEERS`` value, and the peer's identity
per TLS connection (the certificate cannot change on a connection).
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from signpeer_core.api import (
    KEY_IDS_SUFFIX,
    AuthorizationError,
    CertificateIdentity,
    ClientRule,
    is_true,
    parse_bound_rules,
)
from signpeer_peerconnector.protocol import PEERS_INCOMING_ENABLED, UNAUTHORIZED, WSPEERS

if TYPE_CHECKING:
    from signpeer_core.api import Runtime

log = logging.getLogger("signpeer.peers")

#: Key of the cached identity inside the per-connection ASGI TLS dict (see signpeer_core.mtls).
_IDENTITY_KEY = "_signpeer_peer_identity"


#: A peer is known by its client certificate's identity (subject, tokenized issuer DN, serial).
PeerIdentity = CertificateIdentity


def identity_for_scope(scope: MutableMapping[str, Any]) -> PeerIdentity | None:
    """The caller's identity from the connection's TLS extension, parsed once per connection."""
    from signpeer_core.api import client_certificate

    tls = scope.get("extensions", {}).get("tls") if "extensions" in scope else None
    if tls is not None:
        cached = tls.get(_IDENTITY_KEY)
        if cached is not None:
            return cached
    cert = client_certificate(scope)
    if cert is None:
        return None
    identity = PeerIdentity.from_certificate(cert)
    if tls is not None:
        tls[_IDENTITY_KEY] = identity
    return identity


class PeerAuthorizer:
    """Decides peer access from the runtime's in-memory global properties."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._rules_raw: tuple[str | None, str | None] | None = None
        self._rules: frozenset[ClientRule] = frozenset()
        self._bound: dict[ClientRule, str] = {}

    def rules(self) -> frozenset[ClientRule]:
        """The Peer System rules now in force in this process (parsed once per value)."""
        raw = self.runtime.global_value(WSPEERS)
        key_ids = self.runtime.global_value(WSPEERS + KEY_IDS_SUFFIX)
        if (raw, key_ids) != self._rules_raw:
            if raw is None:
                log.warning("No WSPEERS global property set.")
            rules = parse_bound_rules(raw, key_ids)
            self._rules = frozenset(rules)
            self._bound = {r: r.issuer_key_id for r in rules if r.issuer_key_id}
            self._rules_raw = (raw, key_ids)
        return self._rules

    def incoming_enabled(self) -> bool:
        return is_true(self.runtime.global_value(PEERS_INCOMING_ENABLED))

    def is_authorized(self, identity: PeerIdentity) -> bool:
        """SignServer's ``isPeerAuthorizedNoLogging`` plus the incoming switch; never logs."""
        if not self.incoming_enabled():
            return False
        rule = identity.rule
        if rule not in self.rules():
            return False
        bound = self._bound.get(rule)  # the rule's issuer bound to a CA key: only that key's certificates
        return bound is None or bound == rule.issuer_key_id

    def check(self, identity: PeerIdentity) -> None:
        """Raise :class:`AuthorizationError` (403, "Unauthorized") unless the peer may call."""
        if self.is_authorized(identity):
            return
        log.info("Denied peer access to %s issuer: '%s'", identity.serial_hex, identity.issuer)
        raise AuthorizationError(
            f"{UNAUTHORIZED}: peer access denied for certificate serial {identity.serial_hex}, "
            f"issuer '{identity.issuer}'. An administrator of this server must allow incoming peer "
            f"connections (global PEERS_INCOMING_ENABLED=true) and authorize this certificate "
            f"(signpeer wspeersystems -add, or signpeer peers authorize <id>)."
        )

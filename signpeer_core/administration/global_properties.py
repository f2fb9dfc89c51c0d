"""Global properties and the client rules stored in them (WSADMINS, WSAUDITORS, ...).

``set_global``/``remove_global`` are staged (active after ``reload``, as in SignServer). Rule
changes are published at once (:meth:`GlobalProperties.add_rule`, :meth:`~GlobalProperties.remove_rule`,
:meth:`~GlobalProperties.set_rules`): an administrator who adds a rule expects it to work without
a separate ``reload``, so the write, its SET_GLOBAL_PROPERTY records and the generation bump are
one transaction and every server process picks the rule up within its reload poll interval. The
``wsadmins`` family of commands, ``wspeersystems``, ``signpeer peers`` and the Admin Web's
Administrators page all change rules here.
"""

from __future__ import annotations

from collections.abc import Mapping

from signpeer_core import clientcas
from signpeer_core.administration.base import AdminBase
from signpeer_core.administration.publishing import Change, publish, stage
from signpeer_core.audit import GLOBAL_CONFIG, shown
from signpeer_core.clientrules import KEY_IDS_SUFFIX, ClientRule, parse_bound_rules, serialize_key_ids, serialize_rules
from signpeer_core.config import global_key
from signpeer_core.errors import BadRequestError
from signpeer_core.identifiers import check_encodable


class GlobalProperties(AdminBase):
    """The global-property and client-rule operations of :class:`~signpeer_core.admin.WorkerAdmin`."""

    def _global_key(self, scope: str, key: str) -> str:
        if not key.strip():
            raise BadRequestError("a property key must not be empty")
        return global_key(scope, key, self.services.settings.node_id)

    def global_change(self, values: Mapping[str, str]) -> Change:
        """Set stored global keys (``GLOB.X``/``NODE.n.X``), one SET_GLOBAL_PROPERTY record each."""
        change = Change(global_set=dict(values))
        return change.record(*(self.event("SET_GLOBAL_PROPERTY", GLOBAL_CONFIG, None, {
            "GLOBALCONFIG_PROPERTY": full, "GLOBALCONFIG_VALUE": shown(full, value)}) for full, value in values.items()))

    def set_global(self, scope: str, key: str, value: str, publish: bool = False) -> str:
        """Set a global property (scope ``global``/``GLOB`` or ``node``/``NODE``); returns the stored key.

        ``publish``: active at once in every server process instead of after the next reload.
        """
        full = self._global_key(scope, key)
        check_encodable(value, f"the value of {full}")  # storable on every backend (no NUL, no lone surrogate)
        change = self.global_change({full: value})
        if publish:
            self._publish_global(change)
        else:
            stage(self.store, change)
        return full

    def remove_global(self, scope: str, key: str) -> bool:
        """Remove a global property; False when it was not set."""
        full = self._global_key(scope, key)
        if full not in self.store.global_properties():
            return False
        stage(self.store, Change(global_remove=[full]).record(
            self.event("REMOVE_GLOBAL_PROPERTY", GLOBAL_CONFIG, None, {"GLOBALCONFIG_PROPERTY": full})))
        return True

    def get_global(self, scope: str, key: str) -> str | None:
        return self.store.global_properties().get(self._global_key(scope, key))

    def _publish_global(self, change: Change) -> int:
        # Global properties concern every worker: the whole runtime of this process reloads.
        return publish(self.services, change)

    # -- client rules -----------------------------------------------------------------------
    def current_rules(self, prop: str) -> list[ClientRule]:
        """The rules now stored in ``GLOB.<prop>`` (the database, not the loaded runtime), with
        the issuer keys bound to them (``GLOB.<prop>_ISSUERKEYIDS``)."""
        props = self.store.global_properties()
        return parse_bound_rules(props.get(f"GLOB.{prop.upper()}"), props.get(f"GLOB.{prop.upper()}{KEY_IDS_SUFFIX}"))

    def add_rule(self, prop: str, rule: ClientRule) -> bool:
        """Add ``rule`` to ``GLOB.<prop>`` and publish; False (and nothing written) when it is already there."""
        rules = self.current_rules(prop)
        if rule in rules:
            return False
        self.set_rules({prop: [*rules, rule]})
        return True

    def remove_rule(self, prop: str, rule: ClientRule) -> bool:
        """Remove ``rule`` from ``GLOB.<prop>`` and publish; False (and nothing written) when it is not there."""
        rules = self.current_rules(prop)
        if rule not in rules:
            return False
        self.set_rules({prop: [r for r in rules if r != rule]})
        return True

    def set_rules(self, rules: Mapping[str, list[ClientRule]]) -> int:
        """Write the rules of several properties (``WSADMINS`` → rules) and publish them in one transaction.

        Each rule not yet bound to an issuer key is bound to the trusted client CA of its issuer
        DN (:mod:`signpeer_core.clientcas`); the bindings go to ``<prop>_ISSUERKEYIDS`` beside
        the SignServer-format property.
        """
        trusted = clientcas.load(self.services.settings.tls_client_cafiles)
        values: dict[str, str] = {}
        for prop, listed in rules.items():
            bound = [r if r.issuer_key_id else ClientRule(r.serial, r.issuer_dn, trusted.key_id_for_issuer(r.issuer_dn))
                     for r in listed]
            values[f"GLOB.{prop.upper()}"] = serialize_rules(bound)
            values[f"GLOB.{prop.upper()}{KEY_IDS_SUFFIX}"] = serialize_key_ids(bound)
        return self._publish_global(self.global_change(values))

"""The Administrators page: certificates with their roles, "Allow any", incoming peer connections;
and its Add page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import Response

from signpeer_adminweb.access import ADMIN, ALLOWANYWSADMIN, PEER_SYSTEM, ROLES, rules_by_role
from signpeer_adminweb.web import (
    PEERS_INCOMING_ENABLED,
    PREFIX,
    ROLE_FIELDS,
    ROLE_PROPERTY,
    AdminWeb,
    Ctx,
    error_status,
    form_action,
    incoming_registry,
    peers_module_present,
)
from signpeer_core.api import (
    AuditEvent,
    BadRequestError,
    ClientRule,
    NotFoundError,
    SignpeerError,
    format_dn,
    global_value,
    is_true,
    load_certificates,
    parse_serial,
    worker_id_of,
)

URL = f"{PREFIX}/administrators"


def _entries(web: AdminWeb) -> tuple[list[dict[str, Any]], dict[str, list[ClientRule]], dict[str, str]]:
    """Every (serial, issuer) with its roles, in first-seen order across the four properties."""
    props = web.services.store.global_properties()
    by_role = rules_by_role(props, web.services.settings.node_id)
    entries: dict[ClientRule, set[str]] = {}
    for role, _ in ROLES:
        for rule in by_role[role]:
            entries.setdefault(rule, set()).add(role)
    rows = [{"serial": rule.serial_hex, "issuer": rule.issuer_dn, "rule": rule,
             "roles": [r for r, _ in ROLES if r in roles]} for rule, roles in entries.items()]
    return rows, by_role, props


def _write_rules(web: AdminWeb, ctx: Ctx, by_role: dict[str, list[ClientRule]], roles: list[str]) -> None:
    """Publish the properties of ``roles`` in one transaction, one SET_GLOBAL_PROPERTY each."""
    web.admin(ctx).set_rules({ROLE_PROPERTY[role]: by_role[role] for role in roles})


def _rule_from_form(ctx: Ctx, prefix: str = "") -> ClientRule:
    serial_text = ctx.field(prefix + "certSN")
    issuer = ctx.field(prefix + "issuerDN")
    if not serial_text:
        raise BadRequestError("Enter the certificate serial number (hex).")
    if not issuer:
        raise BadRequestError("Enter the issuer DN.")
    return ClientRule(parse_serial(serial_text), issuer)


def _roles_from_form(web: AdminWeb, ctx: Ctx) -> list[str]:
    roles = [role for role, field_name in ROLE_FIELDS.items() if ctx.checked(field_name)]
    if PEER_SYSTEM in roles and not peers_module_present(web.services):
        raise BadRequestError("The Peer System role needs the Peer Systems module (signpeer-peerconnector).")
    if not roles:
        raise BadRequestError("Select at least one role.")
    return roles


def _existing(ctx: Ctx, rows: list[dict[str, Any]]) -> ClientRule:
    old = ClientRule(parse_serial(ctx.field("old_certSN")), ctx.field("old_issuerDN"))
    if old not in {r["rule"] for r in rows}:
        raise NotFoundError("No such administrator; it may have been removed meanwhile.")
    return old


# -- the list page's actions -----------------------------------------------------------------------
def _edit(web: AdminWeb, ctx: Ctx) -> str:
    rows, by_role, _ = _entries(web)
    old = ClientRule(parse_serial(ctx.field("old_certSN")), ctx.field("old_issuerDN"))
    new = _rule_from_form(ctx)
    roles = _roles_from_form(web, ctx)
    _existing(ctx, rows)
    if new != old and new in {r["rule"] for r in rows}:
        raise BadRequestError(f"An authorization for serial number {new.serial_hex} and issuer "
                              f"'{new.issuer_dn}' already exists; edit that one instead.")
    for role, _ in ROLES:
        rules = by_role[role]
        if old in rules:
            index = rules.index(old)
            rules.remove(old)
        else:
            index = len(rules)
        if role in roles:
            rules.insert(index, new)
    _write_rules(web, ctx, by_role, [r for r, _ in ROLES])
    return f"Authorization for serial number {new.serial_hex} updated: {', '.join(roles)}."


def _remove(web: AdminWeb, ctx: Ctx) -> str:
    rows, by_role, _ = _entries(web)
    old = _existing(ctx, rows)
    for role, _ in ROLES:
        by_role[role] = [r for r in by_role[role] if r != old]
    _write_rules(web, ctx, by_role, [r for r, _ in ROLES])
    return f"Authorization for serial number {old.serial_hex} removed."


def _allow_any(web: AdminWeb, ctx: Ctx) -> str:
    value = "true" if ctx.field("value") == "true" else "false"
    web.admin(ctx).set_global("GLOB", ALLOWANYWSADMIN, value, publish=True)
    if value == "true":
        return "Any administrator is now allowed."
    return "Only listed administrators are now allowed."


def _save_peers(web: AdminWeb, ctx: Ctx) -> str:
    if not peers_module_present(web.services):
        raise BadRequestError("The Peer Systems module (signpeer-peerconnector) is not installed.")
    value = "true" if ctx.checked("incoming") else "false"
    web.admin(ctx).set_global("GLOB", PEERS_INCOMING_ENABLED, value, publish=True)
    return "Incoming peer connections are now " + ("allowed." if value == "true" else "refused.")


def _clear_incoming(web: AdminWeb, ctx: Ctx) -> str:
    peer_id = worker_id_of(ctx.field("id"))
    if peer_id is None:
        raise BadRequestError("Bad connection id.")
    event = AuditEvent("INCOMING_PEER_CLEARED", "PEERS", ctx.caller.as_admin(), details={"ID": str(peer_id)})
    if not incoming_registry(web.services).remove(peer_id, audit=lambda conn: web.services.store.write_audit(
            conn, [event])):
        raise NotFoundError("That connection is no longer listed.")
    return "Incoming connection cleared."


#: The list page's form actions: ``action`` → handler → message.
ACTIONS: dict[str, Callable[[AdminWeb, Ctx], str]] = {
    "edit": _edit,
    "remove": _remove,
    "allow_any": _allow_any,
    "save_peers": _save_peers,
    "clear_incoming": _clear_incoming,
}


def administrators(web: AdminWeb, ctx: Ctx) -> Response:
    error = None
    status = 200
    state = ctx.request.query_params.get("action", "list")
    if ctx.form is not None:
        try:
            return web.redirect(ctx, URL, form_action(ACTIONS, ctx)(web, ctx))
        except SignpeerError as exc:
            error, status = exc.message, error_status(exc)
            state = {"edit": "edit", "remove": "remove"}.get(ctx.field("action"), "list")
    rows, by_role, props = _entries(web)
    node = web.services.settings.node_id
    incoming_enabled = is_true(global_value(props, PEERS_INCOMING_ENABLED, node))
    incoming = []
    if peers_module_present(web.services):
        peer_rules = set(by_role[PEER_SYSTEM])
        any_rule = {r["rule"] for r in rows}
        for peer in incoming_registry(web.services).all():
            try:
                rule = ClientRule(parse_serial(peer.serial), peer.issuer)
            except BadRequestError:
                continue
            incoming.append({"peer": peer, "authorized": rule in peer_rules, "has_rule": rule in any_rule,
                             "serial": rule.serial_hex, "issuer": rule.issuer_dn})
    selected: dict[str, Any] | None = None
    if state in ("edit", "remove"):
        q = ctx.request.query_params
        sn, issuer = (ctx.field("old_certSN"), ctx.field("old_issuerDN")) if ctx.form is not None else \
            (q.get("sn", ""), q.get("issuer", ""))
        try:
            wanted = ClientRule(parse_serial(sn), issuer.strip())
            selected = next(r for r in rows if r["rule"] == wanted)
        except (BadRequestError, StopIteration):
            error = error or "No such administrator; it may have been removed meanwhile."
            state = "list"
    return web.render(
        ctx, "administrators.html", http_status=status, active="administrators", rows=rows, state=state,
        selected=selected, error=error, form=ctx.form,
        allow_any=is_true(global_value(props, ALLOWANYWSADMIN, node)), incoming_enabled=incoming_enabled,
        incoming=incoming)


# -- the Add page ----------------------------------------------------------------------------------
def _render_add(web: AdminWeb, ctx: Ctx, values: dict[str, Any], error: str | None = None,
                loaded: str | None = None, status: int = 200) -> Response:
    return web.render(ctx, "administrators_add.html", http_status=status, active="administrators", values=values,
                      error=error, loaded=loaded)


def _load(web: AdminWeb, ctx: Ctx, values: dict[str, Any]) -> Response:
    data = ctx.extra.get("upload") or ctx.raw_field("certificate").encode()
    try:
        certs = load_certificates(data)
        if len(certs) != 1:
            raise BadRequestError(f"expected one certificate, found {len(certs)}")
    except SignpeerError as exc:
        return _render_add(web, ctx, values, error=f"Unable to load certificate: {exc.message}", status=400)
    rule = ClientRule.for_certificate(certs[0])
    values.update(certSN=rule.serial_hex, issuerDN=rule.issuer_dn)
    return _render_add(web, ctx, values, loaded=f"Loaded certificate '{format_dn(certs[0].subject)}'.")


def _load_current(web: AdminWeb, ctx: Ctx, values: dict[str, Any]) -> Response:
    values.update(certSN=ctx.caller.serial_hex, issuerDN=ctx.caller.issuer)
    return _render_add(web, ctx, values, loaded="Loaded your current certificate.")


def _add(web: AdminWeb, ctx: Ctx, values: dict[str, Any]) -> Response:
    try:
        rule = _rule_from_form(ctx)
        roles = _roles_from_form(web, ctx)
        _, by_role, _ = _entries(web)
        changed = [role for role in roles if rule not in by_role[role]]
        if not changed:
            raise BadRequestError("This certificate already has the selected roles.")
        for role in changed:
            by_role[role].append(rule)
        _write_rules(web, ctx, by_role, changed)  # Add writes only the ticked roles' properties
    except SignpeerError as exc:
        return _render_add(web, ctx, values, error=exc.message, status=400)
    return web.redirect(ctx, URL, f"Added authorization for serial number {rule.serial_hex}: {', '.join(roles)}.")


#: The Add page's form actions: ``action`` → handler (web, ctx, the form's values) → response.
ADD_ACTIONS: dict[str, Callable[[AdminWeb, Ctx, dict[str, Any]], Response]] = {
    "load": _load,
    "load_current": _load_current,
    "add": _add,
}


def administrators_add(web: AdminWeb, ctx: Ctx) -> Response:
    q = ctx.request.query_params
    values: dict[str, Any]
    if ctx.form is None:
        values = {"certSN": q.get("certSN", ""), "issuerDN": q.get("issuerDN", "")}
        for role, field_name in ROLE_FIELDS.items():
            default = "true" if role == ADMIN else "false"
            values[field_name] = q.get(field_name, default).lower() == "true"
        return _render_add(web, ctx, values)
    values = {"certSN": ctx.field("certSN"), "issuerDN": ctx.field("issuerDN")}
    for field_name in ROLE_FIELDS.values():
        values[field_name] = ctx.checked(field_name)
    handler = ADD_ACTIONS.get(ctx.field("action"))
    if handler is None:
        return _render_add(web, ctx, values, error="Unknown action.", status=400)
    return handler(web, ctx, values)

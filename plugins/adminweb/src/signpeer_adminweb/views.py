"""The Admin Web pages: routes, request handling, and the changes they make.

One URL per page; ``GET`` renders it and ``POST`` carries an ``action`` field naming the change
(the Administrators page also has its list/edit/remove states as ``?action=`` on GET, as in
SignServer). Every request goes through :meth:`AdminWeb._dispatch`:

1. the caller is identified by TLS client certificate and their roles read from the database
   (:mod:`.access`); no certificate → 401 page, no Admin Web role → 403 page;
2. a POST must pass the CSRF checks (:mod:`.csrf`) and needs the Admin role (an Auditor gets a
   403 page and nothing changes);
3. the page's synchronous work (database, crypto token, template) runs in a worker thread, so
   key generation on an HSM never blocks the event loop that serves signing requests.

A successful change answers ``303 See Other`` back to the page with a one-shot message in a
cookie (so reloading the page does not repeat the change); bad input re-renders the page with
the message and the values entered, and changes nothing (the service layer validates before it
writes). Changes are made through :class:`~signpeer_core.admin.WorkerAdmin` with the caller as
the audit log's administrator.

Changes on the Administrators page (rules, "Allow any", "Allow incoming connections") take
effect at once: the page bumps the configuration generation, as ``signpeer wsadmins`` does, so
every server process reloads within its poll interval (and this one right away). Worker and
Global Configuration edits wait for an explicit **Reload**, as in SignServer.
"""

from __future__ import annotations

import datetime as dt
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import jinja2
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from signpeer_core.admin import GLOBAL_CONFIG, MASK, WorkerAdmin, is_secret_key
from signpeer_core.clientrules import ClientRule, parse_serial, serialize_rules
from signpeer_core.config import global_value, is_true
from signpeer_core.errors import BadRequestError, NotFoundError, SignpeerError
from signpeer_core.keys import format_dn, load_certificates
from signpeer_core.mtls import client_certificate
from signpeer_core.store import AuditEvent

from signpeer_adminweb.access import (
    ADMIN,
    ALLOWANYWSADMIN,
    ARCHIVE_AUDITOR,
    AUDITOR,
    PEER_SYSTEM,
    ROLES,
    Caller,
    rules_by_role,
)
from signpeer_adminweb.csrf import COOKIE_PATH, FIELD, SESSION_COOKIE, CsrfGuard, load_or_create_key, same_origin

if TYPE_CHECKING:
    from signpeer_core.services import Services

log = logging.getLogger("signpeer.adminweb")

PREFIX = "/signserver/adminweb"
FLASH_COOKIE = "signpeer_adminweb_flash"
PEERS_INCOMING_ENABLED = "PEERS_INCOMING_ENABLED"

#: Role checkbox names on the add/edit forms, as SignServer's query parameters spell them.
ROLE_FIELDS = {ADMIN: "roleAdmin", AUDITOR: "roleAuditor", ARCHIVE_AUDITOR: "roleArchiveAuditor",
               PEER_SYSTEM: "rolePeerSystem"}
ROLE_PROPERTY = dict(ROLES)

_SECURITY_HEADERS = {
    # No script at all: the pages are plain HTML forms. Forms may only post to this server.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Refused(Exception):
    """Ends a request with an error page (status, title, message)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


@dataclass
class Ctx:
    """One request: who calls, their session, the form, and what the page will show."""

    request: Request
    caller: Caller
    session: str
    new_session: bool
    csrf_token: str
    form: FormData | None = None
    flash: str | None = None
    set_flash: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def field(self, name: str, default: str = "") -> str:
        """A text form field, stripped; uploaded files are not text fields."""
        if self.form is None:
            return default
        value = self.form.get(name)
        return value.strip() if isinstance(value, str) else default

    def raw_field(self, name: str) -> str:
        value = self.form.get(name) if self.form is not None else None
        return value if isinstance(value, str) else ""

    def checked(self, name: str) -> bool:
        return self.form is not None and self.form.get(name) in ("on", "true", "1", "yes")


def peers_module_present(services: Services) -> bool:
    """Whether the Peer Systems module (signpeer-peerconnector) is installed and loaded."""
    return any(name == "peerconnector" or info.distribution == "signpeer-peerconnector"
               for name, info in services.registry.infos.items())


def _iso(timestamp: float | None) -> str:
    """Date and time in the server's time zone, ISO 8601 to the second (as SignServer shows them)."""
    if not timestamp:
        return ""
    return dt.datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


async def _read_upload(form: FormData, name: str) -> bytes:
    value = form.get(name)
    if isinstance(value, UploadFile):
        return await value.read()
    return b""


class AdminWeb:
    """The pages of one server process."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("signpeer_adminweb", "templates"),
            autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True, lstrip_blocks=True,
        )
        self.env.globals.update(prefix=PREFIX, roles=[r for r, _ in ROLES], role_fields=ROLE_FIELDS,
                                iso=_iso, mask=MASK)
        self.csrf = CsrfGuard(load_or_create_key(services.settings.home / "run" / "adminweb-csrf.key"))

    # -- plumbing -----------------------------------------------------------------------------
    def render(self, ctx: Ctx | None, template: str, http_status: int = 200, **values: Any) -> HTMLResponse:
        context: dict[str, Any] = {"error": None, "active": "", "form": None, "title": ""}
        context.update(values)
        page = self.env.get_template(template).render(
            caller=ctx.caller if ctx else None, csrf_field=FIELD, csrf_token=ctx.csrf_token if ctx else "",
            flash=ctx.flash if ctx else None, peers_present=peers_module_present(self.services),
            node_id=self.services.settings.node_id, **context)
        return HTMLResponse(page, status_code=http_status, headers=_SECURITY_HEADERS)

    def error_page(self, ctx: Ctx | None, status: int, title: str, message: str) -> HTMLResponse:
        return self.render(ctx, "error.html", http_status=status, title=title, message=message)

    def redirect(self, ctx: Ctx, url: str, message: str) -> Response:
        ctx.set_flash = message
        return RedirectResponse(url, status_code=303, headers=_SECURITY_HEADERS)

    def admin(self, ctx: Ctx) -> WorkerAdmin:
        return WorkerAdmin(self.services, ctx.caller.as_admin())

    def _identify(self, request: Request) -> Caller:
        cert = client_certificate(request.scope)
        if cert is None:
            raise Refused(401, "Client certificate authentication required",
                          "The Admin Web needs a TLS client certificate of an administrator. Import your "
                          "administrator certificate (admin.p12 from signpeer init) into the browser and reload.")
        props = self.services.store.global_properties()
        caller = Caller.from_certificate(cert, props, self.services.settings.node_id)
        if not caller.has_web_access:
            log.warning("denied Admin Web access to serial %s issuer '%s' (roles: %s)",
                        caller.serial_hex, caller.issuer, caller.role_names())
            raise Refused(403, "Authorization denied",
                          f"Your certificate (subject '{caller.subject}', serial number {caller.serial_hex}, "
                          f"issuer '{caller.issuer}') is not authorized for the Admin Web. An administrator can "
                          "add it on the Administrators page, or with: signpeer wsadmins -add -cert <file> "
                          "(signpeer wsauditors for read-only access).")
        return caller

    def _check_post(self, ctx: Ctx) -> None:
        request = ctx.request
        host = request.headers.get("host", "")
        origin = request.headers.get("origin")
        referer = request.headers.get("referer")
        if origin is not None:
            if not same_origin(origin, host):
                raise Refused(403, "Request refused",
                              f"The form was sent from another site ({origin}); nothing was changed.")
        elif referer is not None and not same_origin(referer, host):
            raise Refused(403, "Request refused", "The form was sent from another site; nothing was changed.")
        token = ctx.form.get(FIELD) if ctx.form is not None else None
        if ctx.new_session or not self.csrf.valid(ctx.session, ctx.caller.fingerprint,
                                                  token if isinstance(token, str) else None):
            raise Refused(403, "Request refused",
                          "The form's security token is missing or does not match your session and "
                          "certificate (CSRF protection); nothing was changed. Reload the page and try again.")
        if not ctx.caller.is_admin:
            raise Refused(403, "Not authorized",
                          f"Your roles ({ctx.caller.role_names()}) allow viewing only; changing the "
                          "configuration needs the Admin role. Nothing was changed.")

    def page(self, need: str, handler: Callable[[Ctx], Response]) -> Callable[[Request], Awaitable[Response]]:
        """An endpoint: identify, check role (``view``/``audit``/``any``), CSRF on POST, run in a thread."""

        async def endpoint(request: Request) -> Response:
            ctx: Ctx | None = None
            session = request.cookies.get(SESSION_COOKIE) or ""
            new_session = not session or len(session) > 100
            if new_session:
                session = self.csrf.new_session()
            try:
                caller = await anyio.to_thread.run_sync(self._identify, request)
                ctx = Ctx(request, caller, session, new_session, self.csrf.token(session, caller.fingerprint))
                flash = request.cookies.get(FLASH_COOKIE)
                if flash and request.method == "GET":
                    ctx.flash = urllib.parse.unquote(flash)
                if need == "view" and not caller.can_view:
                    raise Refused(403, "Not authorized",
                                  f"This page needs the Admin or Auditor role; yours: {caller.role_names()}.")
                if need == "audit" and not caller.is_auditor:
                    raise Refused(403, "Not authorized",
                                  "The Audit Log needs the Auditor role (also for Admins, as in SignServer). "
                                  "An Admin can add the role to a certificate on the Administrators page.")
                if request.method == "POST":
                    try:
                        ctx.form = await request.form(max_files=2, max_fields=200)
                    except HTTPException as exc:  # malformed or oversized multipart body
                        raise Refused(400, "Bad request", f"The form could not be read: {exc.detail}") from None
                    ctx.extra["upload"] = await _read_upload(ctx.form, "file")
                    self._check_post(ctx)
                response = await anyio.to_thread.run_sync(handler, ctx)
            except Refused as exc:
                response = self.error_page(ctx, exc.status, exc.title, exc.message)
            except SignpeerError as exc:
                # Anything a page did not turn into a message itself (a body over the size limit, a
                # reload that failed): an HTML page rather than the REST API's JSON error.
                response = self.error_page(ctx, exc.status, "Error", exc.message)
            if ctx is not None and ctx.flash and request.method == "GET":
                response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH, secure=True, httponly=True, samesite="strict")
            if ctx is not None and ctx.set_flash:
                response.set_cookie(FLASH_COOKIE, urllib.parse.quote(ctx.set_flash[:1500]), path=COOKIE_PATH,
                                    secure=True, httponly=True, samesite="strict")
            if new_session:
                response.set_cookie(SESSION_COOKIE, session, path=COOKIE_PATH, secure=True, httponly=True,
                                    samesite="strict")
            return response

        return endpoint

    def _apply_now(self) -> None:
        """Make a just-written global change effective in every server process (see module doc)."""
        self.services.store.bump_config_generation()
        self.services.runtime.load()

    # -- home ---------------------------------------------------------------------------------
    def home(self, ctx: Ctx) -> Response:
        if ctx.caller.can_view:
            return RedirectResponse(f"{PREFIX}/workers", status_code=303, headers=_SECURITY_HEADERS)
        return self.render(ctx, "home.html", active="")

    # -- workers ------------------------------------------------------------------------------
    def _pending(self, wid: int, stored: dict[str, str]) -> bool:
        """Whether the stored configuration differs from what this process has loaded."""
        worker = self.services.runtime.by_id.get(wid)
        if worker is None:
            return True
        return worker.config.as_dict() != {k.upper(): v for k, v in stored.items()}

    def workers(self, ctx: Ctx) -> Response:
        error = None
        if ctx.form is not None:
            if ctx.field("action") == "reload":
                generation = self.admin(ctx).reload("all")
                return self.redirect(ctx, f"{PREFIX}/workers",
                                     f"Reloaded the configuration of all workers (generation {generation}).")
            error = "Unknown action."
        # Status of the workers this process has loaded; viewing never triggers a reload (that would
        # silently apply pending changes), so a worker created since the last reload is "not loaded".
        statuses = {w.id: w.status() for w in self.services.runtime.workers()}
        rows = []
        for wid, props in sorted(self.services.store.all_worker_properties().items()):
            status = statuses.get(wid)
            rows.append({
                "id": wid, "name": props.get("NAME", f"Worker{wid}"),
                "implementation": props.get("IMPLEMENTATION_CLASS", ""),
                "type": props.get("TYPE", ""),
                "state": status.state if status else "not loaded",
                "reasons": status.reasons if status else ["not loaded yet; click Reload"],
                "pending": self._pending(wid, props),
            })
        return self.render(ctx, "workers.html", http_status=400 if error else 200, active="workers", rows=rows,
                           error=error)

    def _worker_data(self, ctx: Ctx, wid: int) -> dict[str, Any]:
        admin = self.admin(ctx)
        config = admin.worker_config(wid)
        props = [{"key": k, "value": MASK if is_secret_key(k) else v, "secret": is_secret_key(k)}
                 for k, v in sorted(config.as_dict().items())]
        status = None
        keys: list[dict[str, Any]] = []
        key_error = None
        loaded = self.services.runtime.by_id.get(wid)
        if loaded is None:
            # Viewing never loads a worker (that would apply pending changes behind the admin's back).
            key_error = "This worker is not loaded yet: click Reload to load it and see its keys."
        else:
            status = loaded.status()
            try:
                for info in admin.key_infos(wid):
                    keys.append({
                        "alias": info.alias, "description": info.description,
                        "certificate": format_dn(info.certificate.subject) if info.certificate is not None else "",
                        "default": info.alias == config.get_str("DEFAULTKEY"),
                        "next": info.alias == config.get_str("NEXTCERTSIGNKEY"),
                    })
            except SignpeerError as exc:
                key_error = exc.message
        return {
            "wid": wid, "name": config.name, "props": props, "status": status, "keys": keys,
            "key_error": key_error, "can_activate": loaded is not None and key_error is not None,
            "pending": self._pending(wid, config.as_dict()),
            "defaultkey": config.get_str("DEFAULTKEY"), "nextkey": config.get_str("NEXTCERTSIGNKEY"),
            "keyalg": config.get_str("KEYALG", "RSA"), "keyspec": config.get_str("KEYSPEC", "2048"),
            "requestdn": config.get_str("REQUESTDN"),
        }

    def _worker_id(self, ctx: Ctx) -> int:
        try:
            return self.admin(ctx).worker_id(ctx.request.path_params["wid"])
        except SignpeerError as exc:
            raise Refused(404, "No such worker", exc.message) from None

    def worker(self, ctx: Ctx) -> Response:
        wid = self._worker_id(ctx)
        url = f"{PREFIX}/workers/{wid}"
        error = None
        status = 200
        if ctx.form is not None:
            try:
                result = self._worker_action(ctx, wid)
            except SignpeerError as exc:
                error, status = exc.message, (exc.status if 400 <= exc.status < 500 else 400)
                if exc.status >= 500:
                    status = exc.status
            else:
                if isinstance(result, Response):
                    return result
                return self.redirect(ctx, url, result)
        edit = ctx.request.query_params.get("edit", "").upper()
        data = self._worker_data(ctx, wid)
        if edit and edit not in {p["key"] for p in data["props"]}:
            edit = ""
        return self.render(ctx, "worker.html", http_status=status, active="workers", error=error, edit=edit,
                           form=ctx.form, **data)

    def _worker_action(self, ctx: Ctx, wid: int) -> str | Response:
        admin = self.admin(ctx)
        action = ctx.field("action")
        if action == "set_property":
            key = ctx.field("key").upper()
            if not key:
                raise BadRequestError("Enter a property name.")
            value = ctx.raw_field("value").strip()
            _check_secret(key, value)
            admin.update_worker(wid, {key: value})
            return f"Property {key} saved. Click Reload to make it active."
        if action == "remove_property":
            key = ctx.field("key").upper()
            if not admin.remove_property(wid, key):
                raise NotFoundError(f"The worker has no property {key}.")
            return f"Property {key} removed. Click Reload to make it active."
        if action == "reload":
            admin.reload(wid)
            return "Worker configuration reloaded."
        if action == "activate":
            admin.activate(wid, ctx.raw_field("authcode"))
            return "Crypto token activated (in this server process)."
        if action == "generate_key":
            alias = admin.generate_key(wid, ctx.field("alias") or None, ctx.field("keyalg") or None,
                                       ctx.field("keyspec") or None)
            return f"Generated key '{alias}'."
        if action == "test_key":
            results = admin.test_key(wid, ctx.field("alias") or None)
            failed = [r for r in results if not r.success]
            if failed:
                raise BadRequestError("; ".join(r.line() for r in failed))
            return "; ".join(r.line() for r in results)
        if action == "remove_key":
            alias = ctx.field("alias")
            config = admin.worker_config(wid)
            if alias and alias in (config.get_str("DEFAULTKEY"), config.get_str("NEXTCERTSIGNKEY")) and \
                    not ctx.checked("confirm"):
                raise BadRequestError(f"Key '{alias}' is the worker's DEFAULTKEY or NEXTCERTSIGNKEY; tick "
                                      "'I am sure' to remove it anyway.")
            admin.remove_key(wid, alias)
            return f"Removed key '{alias}'."
        if action == "renew_key":
            config = admin.worker_config(wid)
            pending = config.get_str("NEXTCERTSIGNKEY")
            alias = admin.generate_next_key(wid, replace=ctx.checked("replace"))
            if alias == pending:
                return (f"The next key '{alias}' was already generated (NEXTCERTSIGNKEY). Generate its CSR "
                        "below, then install the certificate issued for it.")
            return (f"Generated the next key '{alias}' and set it as NEXTCERTSIGNKEY. Generate its CSR below, then "
                    "install the certificate issued for it (the key then becomes DEFAULTKEY).")
        if action == "generate_csr":
            which = ctx.field("key", "default")
            alias = ctx.field("alias") if which == "alias" else None
            if which == "alias" and not alias:
                raise BadRequestError("Enter the key alias to make the CSR for.")
            result = admin.generate_csr(wid, dn=ctx.field("dn") or None, sig_alg=ctx.field("sigalg") or None,
                                        alias=alias, next_key=which == "next")
            name = admin.worker_config(wid).name
            filename = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{name}-{result.alias}") + ".csr"
            return Response(result.pem, media_type="application/pkcs10", headers={
                **_SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'})
        if action == "install_certificates":
            data = ctx.extra.get("upload") or ctx.raw_field("chain").encode()
            if not data.strip():
                raise BadRequestError("Paste the certificate chain (PEM, leaf first) or choose a file.")
            result = admin.install_certificate_chain(wid, data, reload=True)
            promoted = f"; key '{result.alias}' is now DEFAULTKEY" if result.promoted else ""
            return (f"Installed {len(result.chain)} certificate(s) for key '{result.alias}'{promoted}. "
                    "The worker was reloaded.")
        raise BadRequestError("Unknown action.")

    # -- global configuration ---------------------------------------------------------------
    def globalconfig(self, ctx: Ctx) -> Response:
        url = f"{PREFIX}/globalconfig"
        error = None
        status = 200
        if ctx.form is not None:
            admin = self.admin(ctx)
            action = ctx.field("action")
            try:
                if action == "set_property":
                    key = ctx.field("key")
                    if not key:
                        raise BadRequestError("Enter a property name.")
                    value = ctx.raw_field("value").strip()
                    _check_secret(key, value)
                    full = admin.set_global(ctx.field("scope", "GLOB"), key, value)
                    return self.redirect(ctx, url, f"Property {full} saved. Click Reload to make it active.")
                if action == "remove_property":
                    key = ctx.field("key")
                    if not admin.remove_global("GLOB", key):
                        raise NotFoundError(f"There is no global property {key}.")
                    return self.redirect(ctx, url, f"Property {key.upper()} removed. Click Reload to make it active.")
                if action == "reload":
                    generation = admin.reload("all")
                    return self.redirect(ctx, url, f"Configuration reloaded (generation {generation}).")
                raise BadRequestError("Unknown action.")
            except SignpeerError as exc:
                error, status = exc.message, 400 if exc.status >= 500 else exc.status
        props = self.services.store.global_properties()
        loaded = self.services.runtime.global_properties
        rows = [{"key": k, "value": MASK if is_secret_key(k) else v, "pending": loaded.get(k) != v}
                for k, v in sorted(props.items())]
        removed = sorted(set(loaded) - set(props))
        edit = ctx.request.query_params.get("edit", "").upper()
        if edit not in props:
            edit = ""
        return self.render(ctx, "globalconfig.html", http_status=status, active="globalconfig", rows=rows,
                           removed=removed, error=error, edit=edit, edit_value=props.get(edit, ""), form=ctx.form)

    # -- audit log ------------------------------------------------------------------------------
    def auditlog(self, ctx: Ctx) -> Response:
        q = ctx.request.query_params
        filters = {k: q.get(k, "").strip() for k in ("event", "worker", "admin", "from", "to", "limit")}
        error = None
        events: list[AuditEvent] = []
        try:
            worker_id = None
            if filters["worker"]:
                admin = self.admin(ctx)
                found = admin.find_worker_id(filters["worker"])
                if found is None and not filters["worker"].isdigit():
                    raise BadRequestError(f"No worker '{filters['worker']}'.")
                worker_id = found if found is not None else int(filters["worker"])
            since = _parse_time(filters["from"], "From")
            until = _parse_time(filters["to"], "To")
            try:
                limit = int(filters["limit"] or 100)
            except ValueError:
                raise BadRequestError(f"Max results must be a whole number, not '{filters['limit']}'.") from None
            if not 1 <= limit <= 10000:
                raise BadRequestError("Max results must be between 1 and 10000.")
            events = self.services.store.audit_events(
                event=filters["event"] or None, worker_id=worker_id, admin=filters["admin"] or None,
                since=since, until=until, limit=limit)
        except SignpeerError as exc:
            error = exc.message
        return self.render(ctx, "auditlog.html", http_status=400 if error else 200, active="auditlog", events=events,
                           filters=filters, error=error, event_names=_EVENT_NAMES)

    # -- administrators ---------------------------------------------------------------------------
    def _entries(self) -> tuple[list[dict[str, Any]], dict[str, list[ClientRule]], dict[str, str]]:
        """Every (serial, issuer) with its roles, in first-seen order across the four properties."""
        props = self.services.store.global_properties()
        by_role = rules_by_role(props, self.services.settings.node_id)
        entries: dict[ClientRule, set[str]] = {}
        for role, _ in ROLES:
            for rule in by_role[role]:
                entries.setdefault(rule, set()).add(role)
        rows = [{"serial": rule.serial_hex, "issuer": rule.issuer_dn, "rule": rule,
                 "roles": [r for r, _ in ROLES if r in roles]} for rule, roles in entries.items()]
        return rows, by_role, props

    def _write_rules(self, ctx: Ctx, by_role: dict[str, list[ClientRule]], roles: list[str]) -> None:
        """Write the properties of ``roles`` in one transaction, one SET_GLOBAL_PROPERTY each."""
        admin = ctx.caller.as_admin()
        values = {f"GLOB.{ROLE_PROPERTY[role]}": serialize_rules(by_role[role]) for role in roles}
        self.services.store.apply_changes(global_set=values, audit=[
            AuditEvent("SET_GLOBAL_PROPERTY", GLOBAL_CONFIG, admin, None,
                       {"GLOBALCONFIG_PROPERTY": key, "GLOBALCONFIG_VALUE": value})
            for key, value in values.items()])
        self._apply_now()

    def _rule_from_form(self, ctx: Ctx, prefix: str = "") -> ClientRule:
        serial_text = ctx.field(prefix + "certSN")
        issuer = ctx.field(prefix + "issuerDN")
        if not serial_text:
            raise BadRequestError("Enter the certificate serial number (hex).")
        if not issuer:
            raise BadRequestError("Enter the issuer DN.")
        return ClientRule(parse_serial(serial_text), issuer)

    def _roles_from_form(self, ctx: Ctx) -> list[str]:
        roles = [role for role, field_name in ROLE_FIELDS.items() if ctx.checked(field_name)]
        if PEER_SYSTEM in roles and not peers_module_present(self.services):
            raise BadRequestError("The Peer System role needs the Peer Systems module (signpeer-peerconnector).")
        if not roles:
            raise BadRequestError("Select at least one role.")
        return roles

    def administrators(self, ctx: Ctx) -> Response:
        url = f"{PREFIX}/administrators"
        error = None
        status = 200
        state = ctx.request.query_params.get("action", "list")
        if ctx.form is not None:
            try:
                return self.redirect(ctx, url, self._administrators_action(ctx))
            except SignpeerError as exc:
                error, status = exc.message, 400 if exc.status >= 500 else exc.status
                state = {"edit": "edit", "remove": "remove"}.get(ctx.field("action"), "list")
        rows, by_role, props = self._entries()
        node = self.services.settings.node_id
        incoming_enabled = is_true(global_value(props, PEERS_INCOMING_ENABLED, node))
        incoming = []
        if peers_module_present(self.services):
            peer_rules = set(by_role[PEER_SYSTEM])
            any_rule = {r["rule"] for r in rows}
            for peer in self.services.store.incoming_peers():
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
        return self.render(
            ctx, "administrators.html", http_status=status, active="administrators", rows=rows, state=state,
            selected=selected, error=error, form=ctx.form,
            allow_any=is_true(global_value(props, ALLOWANYWSADMIN, node)), incoming_enabled=incoming_enabled,
            incoming=incoming)

    def _administrators_action(self, ctx: Ctx) -> str:
        action = ctx.field("action")
        rows, by_role, _ = self._entries()
        if action == "edit":
            old = ClientRule(parse_serial(ctx.field("old_certSN")), ctx.field("old_issuerDN"))
            new = self._rule_from_form(ctx)
            roles = self._roles_from_form(ctx)
            if old not in {r["rule"] for r in rows}:
                raise NotFoundError("No such administrator; it may have been removed meanwhile.")
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
            self._write_rules(ctx, by_role, [r for r, _ in ROLES])
            return f"Authorization for serial number {new.serial_hex} updated: {', '.join(roles)}."
        if action == "remove":
            old = ClientRule(parse_serial(ctx.field("old_certSN")), ctx.field("old_issuerDN"))
            if old not in {r["rule"] for r in rows}:
                raise NotFoundError("No such administrator; it may have been removed meanwhile.")
            for role, _ in ROLES:
                by_role[role] = [r for r in by_role[role] if r != old]
            self._write_rules(ctx, by_role, [r for r, _ in ROLES])
            return f"Authorization for serial number {old.serial_hex} removed."
        if action == "allow_any":
            value = "true" if ctx.field("value") == "true" else "false"
            self.admin(ctx).set_global("GLOB", ALLOWANYWSADMIN, value)
            self._apply_now()
            if value == "true":
                return "Any administrator is now allowed."
            return "Only listed administrators are now allowed."
        if action == "save_peers":
            if not peers_module_present(self.services):
                raise BadRequestError("The Peer Systems module (signpeer-peerconnector) is not installed.")
            value = "true" if ctx.checked("incoming") else "false"
            self.admin(ctx).set_global("GLOB", PEERS_INCOMING_ENABLED, value)
            self._apply_now()
            return "Incoming peer connections are now " + ("allowed." if value == "true" else "refused.")
        if action == "clear_incoming":
            try:
                peer_id = int(ctx.field("id"))
            except ValueError:
                raise BadRequestError("Bad connection id.") from None
            if not self.services.store.remove_incoming_peer(peer_id):
                raise NotFoundError("That connection is no longer listed.")
            return "Incoming connection cleared."
        raise BadRequestError("Unknown action.")

    def administrators_add(self, ctx: Ctx) -> Response:
        q = ctx.request.query_params
        values: dict[str, Any]
        if ctx.form is None:
            values = {"certSN": q.get("certSN", ""), "issuerDN": q.get("issuerDN", "")}
            for role, field_name in ROLE_FIELDS.items():
                default = "true" if role == ADMIN else "false"
                values[field_name] = q.get(field_name, default).lower() == "true"
            return self._render_add(ctx, values)
        values = {"certSN": ctx.field("certSN"), "issuerDN": ctx.field("issuerDN")}
        for field_name in ROLE_FIELDS.values():
            values[field_name] = ctx.checked(field_name)
        action = ctx.field("action")
        if action == "load":
            data = ctx.extra.get("upload") or ctx.raw_field("certificate").encode()
            try:
                certs = load_certificates(data)
                if len(certs) != 1:
                    raise BadRequestError(f"expected one certificate, found {len(certs)}")
            except SignpeerError as exc:
                return self._render_add(ctx, values, error=f"Unable to load certificate: {exc.message}", status=400)
            rule = ClientRule.for_certificate(certs[0])
            values.update(certSN=rule.serial_hex, issuerDN=rule.issuer_dn)
            return self._render_add(ctx, values, loaded=f"Loaded certificate '{format_dn(certs[0].subject)}'.")
        if action == "load_current":
            values.update(certSN=ctx.caller.serial_hex, issuerDN=ctx.caller.issuer)
            return self._render_add(ctx, values, loaded="Loaded your current certificate.")
        if action != "add":
            return self._render_add(ctx, values, error="Unknown action.", status=400)
        try:
            rule = self._rule_from_form(ctx)
            roles = self._roles_from_form(ctx)
            _, by_role, _ = self._entries()
            changed = [role for role in roles if rule not in by_role[role]]
            if not changed:
                raise BadRequestError("This certificate already has the selected roles.")
            for role in changed:
                by_role[role].append(rule)
            self._write_rules(ctx, by_role, changed)  # Add writes only the ticked roles' properties
        except SignpeerError as exc:
            return self._render_add(ctx, values, error=exc.message, status=400)
        return self.redirect(ctx, f"{PREFIX}/administrators",
                             f"Added authorization for serial number {rule.serial_hex}: {', '.join(roles)}.")

    def _render_add(self, ctx: Ctx, values: dict[str, Any], error: str | None = None, loaded: str | None = None,
                    status: int = 200) -> Response:
        return self.render(ctx, "administrators_add.html", http_status=status, active="administrators", values=values,
                           error=error, loaded=loaded)


def _check_secret(key: str, value: str) -> None:
    """A secret's edit box starts empty (its value is never sent to the browser): saving it empty
    would wipe the password by accident, so that needs Remove instead."""
    if is_secret_key(key) and not value:
        raise BadRequestError(f"Enter the new value of {key.upper()} (the current one is not shown); "
                              "to delete it use Remove.")


def _parse_time(text: str, label: str) -> float | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadRequestError(f"{label}: '{text}' is not a date and time like 2026-01-31T14:00") from None
    if value.tzinfo is None:
        value = value.astimezone()  # the server's time zone, as the table shows
    return value.timestamp()


_EVENT_NAMES = ("SET_WORKER_CONFIG", "RELOAD_WORKER_CONFIG", "SET_GLOBAL_PROPERTY", "REMOVE_GLOBAL_PROPERTY",
                "KEYGEN", "KEYTEST", "KEYREMOVE", "GENCSR", "CERTINSTALLED", "CERTCHAININSTALLED", "KEYSELECTED")


def routes(services: Services) -> list[BaseRoute]:
    web = AdminWeb(services)
    both = ["GET", "POST"]
    static_dir = Path(__file__).parent / "static"
    return [
        Route(PREFIX, lambda request: RedirectResponse(PREFIX + "/", status_code=308), methods=["GET"]),
        Route(PREFIX + "/", web.page("any", web.home), methods=["GET"]),
        Route(PREFIX + "/workers", web.page("view", web.workers), methods=both),
        Route(PREFIX + "/workers/{wid}", web.page("view", web.worker), methods=both),
        Route(PREFIX + "/globalconfig", web.page("view", web.globalconfig), methods=both),
        Route(PREFIX + "/auditlog", web.page("audit", web.auditlog), methods=["GET"]),
        Route(PREFIX + "/administrators", web.page("view", web.administrators), methods=both),
        Route(PREFIX + "/administrators/add", web.page("view", web.administrators_add), methods=both),
        Mount(PREFIX + "/static", app=StaticFiles(directory=static_dir), name="adminweb-static"),
    ]


__all__ = ["AdminWeb", "PREFIX", "peers_module_present", "routes"]

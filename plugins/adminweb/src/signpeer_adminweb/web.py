"""The Admin Web's request handling: who calls, CSRF, roles, rendering; the pages are in :mod:`.pages`.

One URL per page (one module per page in :mod:`.pages`); ``GET`` renders it and ``POST`` carries an ``action`` field naming the change
(the Administrators page also has its list/edit/remove states as ``?action=`` on GET, as in
SignServer). Every request goes through :meth:`AdminWeb.page`:

1. the caller is identified by TLS client certificate and their roles read from the database
   (:mod:`.access`); no certificate → 401 page, no Admin Web role → 403 page;
2. a POST must pass the CSRF checks (:mod:`.csrf`) and needs the Admin role (an Auditor gets a
   403 page and nothing changes);
3. the page's synchronous work (database, crypto token, template) runs in a worker thread, so
   key generation on an HSM never blocks the event loop that serves signing requests.

A successful change answers ``303 See Other`` back to the page with a one-shot message in a
cookie (so reloading the page does not repeat the change); bad input re-renders the page with
the message and the values entered, and changes nothing (the service layer validates before it
writes). A page's form actions are a table (``action`` name → handler) in its module. Changes are
made through :class:`~signpeer_core.admin.WorkerAdmin` with the caller as
the audit log's administrator.

Changes on the Administrators page (rules, "Allow any", "Allow incoming connections") take
effect at once: they are published (value, audit records and generation bump in one
transaction), as ``signpeer wsadmins`` does, so every server process reloads within its poll
interval (and this one right away). Worker and
Global Configuration edits wait for an explicit **Reload**, as in SignServer.
"""

from __future__ import annotations

import datetime as dt
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
import jinja2
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from signpeer_adminweb.access import ADMIN, ARCHIVE_AUDITOR, AUDITOR, PEER_SYSTEM, ROLES, Caller
from signpeer_adminweb.csrf import COOKIE_PATH, FIELD, SESSION_COOKIE, CsrfGuard
from signpeer_adminweb.origins import allowed_origins, origin_of
from signpeer_core.api import (
    MASK,
    Admin,
    BadRequestError,
    SignpeerError,
    WorkerAdmin,
    client_certificate,
    is_secret_key,
    record_refusal,
)

if TYPE_CHECKING:
    from signpeer_core.api import Services

log = logging.getLogger("signpeer.adminweb")

T = TypeVar("T")

PREFIX = "/signserver/adminweb"
FLASH_COOKIE = "signpeer_adminweb_flash"
PEERS_INCOMING_ENABLED = "PEERS_INCOMING_ENABLED"

#: Role checkbox names on the add/edit forms, as SignServer's query parameters spell them.
ROLE_FIELDS = {ADMIN: "roleAdmin", AUDITOR: "roleAuditor", ARCHIVE_AUDITOR: "roleArchiveAuditor",
               PEER_SYSTEM: "rolePeerSystem"}
ROLE_PROPERTY = dict(ROLES)

SECURITY_HEADERS = {
    # No script at all: the pages are plain HTML forms. Forms may only post to this server.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    # The Admin Web is only ever served over TLS: browsers keep to https for this host for a year.
    "Strict-Transport-Security": "max-age=31536000",
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
    """Whether the Peer Systems module (signpeer-peerconnector) is installed and loaded: it
    declares the hook that gives its incoming connections registry."""
    return services.registry.has_hook("signpeer_incoming_peers")


def incoming_registry(services: Services) -> Any:
    """The peer connector's incoming connections registry (hook ``signpeer_incoming_peers``);
    :class:`BadRequestError` when the peer connector is not installed."""
    for registry in services.registry.collect("signpeer_incoming_peers", services=services):
        return registry
    raise BadRequestError("The Peer Systems module (signpeer-peerconnector) is not installed.")


def iso(timestamp: float | None) -> str:
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
    """The request handling every page of one server process shares."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("signpeer_adminweb", "templates"),
            autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True, lstrip_blocks=True,
        )
        self.env.globals.update(prefix=PREFIX, roles=[r for r, _ in ROLES], role_fields=ROLE_FIELDS,
                                iso=iso, mask=MASK)
        self.csrf = CsrfGuard(services.store.box.subkey("adminweb csrf"))  # one key for every node
        self.origins = allowed_origins(services.settings)

    # -- plumbing -----------------------------------------------------------------------------
    def render(self, ctx: Ctx | None, template: str, http_status: int = 200, **values: Any) -> HTMLResponse:
        context: dict[str, Any] = {"error": None, "active": "", "form": None, "title": ""}
        context.update(values)
        page = self.env.get_template(template).render(
            caller=ctx.caller if ctx else None, csrf_field=FIELD, csrf_token=ctx.csrf_token if ctx else "",
            flash=ctx.flash if ctx else None, peers_present=peers_module_present(self.services),
            node_id=self.services.settings.node_id, **context)
        return HTMLResponse(page, status_code=http_status, headers=SECURITY_HEADERS)

    def error_page(self, ctx: Ctx | None, status: int, title: str, message: str) -> HTMLResponse:
        return self.render(ctx, "error.html", http_status=status, title=title, message=message)

    def redirect(self, ctx: Ctx, url: str, message: str) -> Response:
        ctx.set_flash = message
        return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)

    def admin(self, ctx: Ctx) -> WorkerAdmin:
        return WorkerAdmin(self.services, ctx.caller.as_admin())

    def _identify(self, request: Request) -> Caller:
        cert = client_certificate(request.scope)
        remote = request.client.host if request.client else ""
        if cert is None:
            record_refusal(self.services, "ADMINWEB", Admin("anonymous (no client certificate)"), request.url.path,
                           "no client certificate", remote)
            raise Refused(401, "Client certificate authentication required",
                          "The Admin Web needs a TLS client certificate of an administrator. Import your "
                          "administrator certificate (admin.p12 from signpeer init) into the browser and reload.")
        props = self.services.store.global_properties()
        caller = Caller.from_certificate(cert, props, self.services.settings.node_id)
        if not caller.has_web_access:
            log.warning("denied Admin Web access to serial %s issuer '%s' (roles: %s)",
                        caller.serial_hex, caller.issuer, caller.role_names())
            record_refusal(self.services, "ADMINWEB", caller.as_admin(), request.url.path,
                           f"no Admin Web role (roles: {caller.role_names()})", remote)
            raise Refused(403, "Authorization denied",
                          f"Your certificate (subject '{caller.subject}', serial number {caller.serial_hex}, "
                          f"issuer '{caller.issuer}') is not authorized for the Admin Web. An administrator can "
                          "add it on the Administrators page, or with: signpeer wsadmins -add -cert <file> "
                          "(signpeer wsauditors for read-only access).")
        return caller

    def _check_post(self, ctx: Ctx) -> None:
        request = ctx.request
        origin = request.headers.get("origin")
        referer = request.headers.get("referer")
        if origin is not None:
            if origin_of(origin) not in self.origins:
                raise Refused(403, "Request refused",
                              f"The form was sent from another site ({origin}); nothing was changed. If this "
                              "is the address of this server, add it to server_name in signpeer.toml.")
        elif referer is not None and origin_of(referer) not in self.origins:
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


def form_action(actions: Mapping[str, Callable[..., T]], ctx: Ctx) -> Callable[..., T]:
    """The handler of a page's action table that the form's ``action`` field names."""
    handler = actions.get(ctx.field("action"))
    if handler is None:
        raise BadRequestError("Unknown action.")
    return handler


def error_status(exc: SignpeerError) -> int:
    """The status of a page re-rendered with an error: the error's own, or 400 for a server-side one."""
    return 400 if exc.status >= 500 else exc.status


def check_secret(key: str, value: str) -> None:
    """A secret's edit box starts empty (its value is never sent to the browser): saving it empty
    would wipe the password by accident, so that needs Remove instead."""
    if is_secret_key(key) and not value:
        raise BadRequestError(f"Enter the new value of {key.upper()} (the current one is not shown); "
                              "to delete it use Remove.")

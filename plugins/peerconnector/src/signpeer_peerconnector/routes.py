"""The peer endpoint: Starlette routes under ``/signserver/peer/v1`` (see docs/peer-protocol.md).

Every operation goes through :func:`PeerService.guard`: no client certificate → 401; the call
is recorded in the incoming-connections registry; then SignServer's authorization (403
"Unauthorized" and the ``Denied peer access`` log line on refusal). Errors are raised as
:mod:`signpeer_core.errors` classes; the app turns them into ``{"error": ...}`` with their status.

Other plugins add operations under the same prefix and the same guard (the RA operations of
one-time keys do) through the hook ``signpeer_peer_routes`` this plugin declares
(:mod:`.hookspecs`).
Paths with another protocol version get 400 with the versions this server speaks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from signpeer_core.api import (
    AuthenticationError,
    AuthorizationError,
    BadRequestError,
    ConfigurationError,
    DirectRoute,
    NotFoundError,
    SignpeerError,
    json_body,
    load_certificates,
    read_body,
    record_refusal,
    shorten,
    worker_id_of,
)
from signpeer_core.api import __version__ as core_version
from signpeer_peerconnector import __version__
from signpeer_peerconnector import metrics as peer_metrics
from signpeer_peerconnector.authz import PeerAuthorizer, PeerIdentity, identity_for_scope
from signpeer_peerconnector.bindings import KeyBindings
from signpeer_peerconnector.incoming import IncomingRecorder
from signpeer_peerconnector.incoming_store import IncomingPeers
from signpeer_peerconnector.openapi import extra_operations, openapi_document
from signpeer_peerconnector.protocol import (
    BASE_PATH,
    PAGE_SIZE,
    PEER_ROOT,
    PEM_CHAIN_TYPE,
    PKCS10_PEM_TYPE,
    PROTOCOL_NAME,
    SUPPORTED_VERSIONS,
    UNAUTHORIZED,
    VERSION,
)
from signpeer_peerconnector.renewal import Renewal

if TYPE_CHECKING:
    from signpeer_core.api import Services

Handler = Callable[[Request, PeerIdentity, "PeerService"], Awaitable[Response]]


class PeerService:
    """The peer endpoint's state in one server process."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.authorizer = PeerAuthorizer(services.runtime)
        self.recorder = IncomingRecorder(IncomingPeers(services.store.database, services.settings.node_id))
        self.bindings = KeyBindings(services.runtime)
        self.renewal = Renewal(services)

    async def guard(self, request: Request) -> PeerIdentity:
        """Identify, record and authorize the caller; raises 401/403."""
        identity = identity_for_scope(request.scope)
        if identity is None:
            peer_metrics.refused.labels("unauthenticated").inc()
            raise AuthenticationError(
                f"{UNAUTHORIZED}: the peer protocol needs a TLS client certificate on every call; "
                "connect with the CA's client certificate (curl --cert/--key, signpeer connector --cert/--key)")
        client = request.client
        await self.recorder.record(identity, client.host if client else "unknown")
        if not self.authorizer.is_authorized(identity):
            # In the audit log too (rate-limited per peer and path), then the 403 of check().
            reason = ("incoming peer connections are not allowed" if not self.authorizer.incoming_enabled()
                      else "certificate not authorized as a Peer System")
            await anyio.to_thread.run_sync(record_refusal, self.services, "PEERS", identity.as_admin(),
                                           request.url.path, reason, client.host if client else "")
        try:
            self.authorizer.check(identity)
        except AuthorizationError:
            peer_metrics.refused.labels("unauthorized").inc()
            raise
        return identity

    def endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind the guard (client certificate, registry, authorization), counted
        per operation and outcome (:mod:`.metrics`)."""
        operation = getattr(handler, "__name__", "peer_operation")

        async def run(request: Request) -> Response:
            try:
                identity = await self.guard(request)
                response = await handler(request, identity, self)
            except SignpeerError as exc:
                peer_metrics.count_call(operation, exc.status)
                raise
            except Exception:
                peer_metrics.count_call(operation, 500)
                raise
            peer_metrics.count_call(operation, response.status_code)
            return response

        run.__name__ = getattr(handler, "__name__", "peer_operation")
        return run


def _plain(endpoint: Callable[..., Any]) -> Handler:
    """A plain Starlette endpoint (another plugin's) as a guarded peer handler."""
    async def handler(request: Request, identity: PeerIdentity, service: PeerService) -> Response:
        return await endpoint(request)

    handler.__name__ = getattr(endpoint, "__name__", "peer_operation")
    handler.__doc__ = endpoint.__doc__
    return handler


class _Asgi:
    """A request endpoint as a plain ASGI app (what Starlette's ``Route`` makes of a function, less
    its exception handling: a :class:`SignpeerError` goes up to the app's exception middleware, or,
    called directly, to the guard middleware, which answer it alike)."""

    __slots__ = ("endpoint",)

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        response = await self.endpoint(Request(scope, receive, send))
        await response(scope, receive, send)


# -- helpers ---------------------------------------------------------------------------------
def _bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequestError(f"'{name}' must be true or false")
    return value


async def _worker_id(service: PeerService, request: Request, identity: PeerIdentity) -> int:
    """The worker behind the path's binding; one made visible (or renamed) by another process a
    moment ago is found after catching up on what that process published."""
    binding = request.path_params["binding"]
    try:
        return service.bindings.worker(binding).id
    except NotFoundError:
        if not service.renewal.shared:
            raise
    await anyio.to_thread.run_sync(service.renewal.catch_up, identity)
    return service.bindings.worker(binding).id


def _wants_pem(request: Request) -> bool:
    return request.query_params.get("format", "").lower() == "pem" or \
        PKCS10_PEM_TYPE in request.headers.get("accept", "")


async def _chain_from_request(request: Request) -> list[Any]:
    """The certificate chain of an install call: raw PEM/DER body, or JSON ``certificateChain``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("", "application/json"):
        body = await json_body(request, empty={})
        chain = body.get("certificateChain")
        if isinstance(chain, list):
            if not all(isinstance(c, str) for c in chain):
                raise BadRequestError("'certificateChain' must be a PEM string or a list of PEM strings")
            chain = "\n".join(chain)
        if not isinstance(chain, str) or not chain.strip():
            raise BadRequestError("send the certificate chain (leaf first) as 'certificateChain': \"<PEM>\", "
                                  f"or as the raw body with Content-Type: {PEM_CHAIN_TYPE}")
        data = chain.encode()
    else:
        data = await read_body(request)
    return load_certificates(data)


# -- operations ------------------------------------------------------------------------------
async def ping(request: Request, identity: PeerIdentity, service: PeerService) -> Response:
    return JSONResponse({
        "protocol": PROTOCOL_NAME, "version": VERSION, "server": f"signpeer {core_version}",
        "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "peer": identity.as_json(),
    })


async def list_bindings(request: Request, identity: PeerIdentity, service: PeerService) -> Response:
    after, limit = _page(request)

    def listing() -> bytes:
        service.renewal.catch_up(identity)
        return service.bindings.list_json(after, limit)

    body = await anyio.to_thread.run_sync(listing)
    return Response(body, media_type="application/json")


def _page(request: Request) -> tuple[int | None, int]:
    """``after`` (the ``nextCursor`` of the previous page) and ``limit`` (1 to PAGE_SIZE) of a listing."""
    query = request.query_params
    after = None
    if "after" in query:
        after = worker_id_of(query["after"])
        if after is None:
            raise BadRequestError(f"after '{shorten(query['after'])}' is not a cursor; pass the nextCursor of the "
                                  f"previous page")
    limit = PAGE_SIZE
    if "limit" in query:
        text = query["limit"].strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 6 and 1 <= int(text) <= PAGE_SIZE):
            raise BadRequestError(f"limit '{shorten(query['limit'])}' must be a number from 1 to {PAGE_SIZE}")
        limit = int(text)
    return after, limit


async def get_binding(request: Request, identity: PeerIdentity, service: PeerService) -> Response:
    def read() -> dict[str, Any]:
        service.renewal.catch_up(identity)
        return service.bindings.get(request.path_params["binding"])

    binding = await anyio.to_thread.run_sync(read)
    return JSONResponse(binding)


async def next_key(request: Request, identity: PeerIdentity, service: PeerService) -> Response:
    body = await json_body(request, empty={})
    replace = _bool(body, "replace")
    wid = await _worker_id(service, request, identity)
    # The binding asks the token for its keys (an HSM round trip): off the event loop too.
    result, binding = await anyio.to_thread.run_sync(
        lambda: (service.renewal.next_key(wid, identity, replace), service.bindings.get(wid)))
    result["keyBinding"] = binding
    return JSONResponse(result, status_code=201 if result["created"] else 200)


async def csr(request: Request, identity: PeerIdentity, service: PeerService) -> Response:
    wid = await _worker_id(service, request, identity)
    answer = await anyio.to_thread.run_sync(service.renewal.csr, wid, identity)
    if _wants_pem(request):
        return Response(answer.pem, media_type=PKCS10_PEM_TYPE)
    return JSONResponse({"csr": answer.pem, "keyPairAlias": answer.alias, "subjectDn": answer.subject_dn,
                         "signatureAlgorithm": answer.signature_algorithm, "forNextKey": answer.for_next_key})


async def install(request: Request, identity: PeerIdentity, service: PeerService) -> Response:
    wid = await _worker_id(service, request, identity)
    chain = await _chain_from_request(request)
    result, binding = await anyio.to_thread.run_sync(
        lambda: (service.renewal.install(wid, identity, chain), service.bindings.get(wid)))
    result["keyBinding"] = binding
    return JSONResponse(result)


async def set_status(request: Request, identity: PeerIdentity, service: PeerService) -> Response:
    body = await json_body(request, empty={})
    wid = await _worker_id(service, request, identity)

    def change() -> dict[str, Any]:
        service.renewal.set_status(wid, identity, body.get("status"))
        return service.bindings.get(wid)

    return JSONResponse(await anyio.to_thread.run_sync(change))


def _openapi(extra: list[Route]) -> Callable[[Request], Awaitable[Response]]:
    async def openapi(request: Request) -> Response:
        document = openapi_document(__version__)
        for route in extra:  # operations of other plugins (RA mode), described by their docstrings
            document["paths"].setdefault(route.path, {}).update(extra_operations(route))
        return JSONResponse(document)

    return openapi


def _extra_routes(services: Services) -> list[Route]:
    """The routes other plugins add under the endpoint (hook ``signpeer_peer_routes``)."""
    extra: list[Route] = []
    for route in services.registry.collect("signpeer_peer_routes", services=services):
        if not isinstance(route, Route) or not route.path.startswith("/"):
            raise ConfigurationError(f"signpeer_peer_routes must return starlette Routes with paths starting "
                                     f"with '/' (relative to {BASE_PATH}), not {route!r}")
        extra.append(route)
    return extra


def _unknown(service: PeerService) -> Callable[[Request], Awaitable[Response]]:
    async def unknown(request: Request) -> Response:
        version = request.path_params.get("version", "")
        if version not in SUPPORTED_VERSIONS:
            raise BadRequestError(
                f"unsupported peer protocol version '{version}'; this server speaks "
                f"{', '.join(SUPPORTED_VERSIONS)} ({PEER_ROOT}/{SUPPORTED_VERSIONS[-1]}/...)")
        raise NotFoundError(f"no peer operation {request.method} {request.url.path}; the operations are "
                            f"listed in {BASE_PATH}/openapi.json")

    return unknown


def routes(services: Services) -> list[BaseRoute]:
    """The peer routes of one server process."""
    service = services.state(PeerService, lambda: PeerService(services))
    ep = service.endpoint
    extra = _extra_routes(services)

    def direct(path: str, handler: Handler, methods: list[str], name: str | None = None) -> DirectRoute:
        # A plain ASGI app in a DirectRoute: the app's outermost middleware calls it around
        # Starlette's routing when nothing before it matches its paths (signpeer_core/directroutes.py).
        return DirectRoute(f"{BASE_PATH}{path}", _Asgi(ep(handler)), methods=methods,
                           name=name or handler.__name__)

    table: list[BaseRoute] = [
        direct("/ping", ping, ["GET", "POST"]),
        Route(f"{BASE_PATH}/openapi.json", _openapi(extra), methods=["GET"]),
        direct("/keybindings", list_bindings, ["GET"]),
        direct("/keybindings/{binding}", get_binding, ["GET"]),
        direct("/keybindings/{binding}/nextkey", next_key, ["POST"]),
        direct("/keybindings/{binding}/csr", csr, ["POST"]),
        direct("/keybindings/{binding}/certificate", install, ["POST", "PUT"]),
        direct("/keybindings/{binding}/status", set_status, ["POST", "PUT"]),
    ]
    for route in extra:
        methods = [m for m in (route.methods or ()) if m != "HEAD"]
        table.append(direct(route.path, _plain(route.endpoint), methods, name=route.name))
    unknown = _unknown(service)
    table.append(Route(f"{PEER_ROOT}/{{version}}/{{rest:path}}", unknown,
                       methods=["GET", "POST", "PUT", "DELETE", "PATCH"]))
    table.append(Route(f"{PEER_ROOT}/{{version}}", unknown, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]))
    return table

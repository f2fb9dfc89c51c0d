"""The peer endpoint: Starlette routes under ``/signserver/peer/v1`` (see docs/peer-protocol.md).

Every operation goes through :func:`PeerService.guard`: no client certificate → 401; the call
is recorded in the incoming-connections registry; then SignServer's authorization (403
"Unauthorized" and the ``Denied peer access`` log line on refusal). Errors are raised as
:mod:`signpeer_core.errors` classes; the app turns them into ``{"error": ...}`` with their status.

Other plugins can add operations under the same prefix and the same guard (the RA operations
of one-time keys do) with :func:`register_operation` at import time of their plugin module.
Paths with another protocol version get 400 with the versions this server speaks.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from signpeer_core import __version__ as core_version
from signpeer_core.errors import AuthenticationError, BadRequestError, NotFoundError
from signpeer_core.keys import load_certificates

from signpeer_peerconnector import __version__
from signpeer_peerconnector.authz import PeerAuthorizer, PeerIdentity, identity_for_scope
from signpeer_peerconnector.bindings import KeyBindings
from signpeer_peerconnector.incoming import IncomingRecorder
from signpeer_peerconnector.incoming_store import IncomingPeers
from signpeer_peerconnector.openapi import openapi_document
from signpeer_peerconnector.protocol import (
    BASE_PATH,
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
    from signpeer_core.services import Services

Handler = Callable[[Request, PeerIdentity, "PeerService"], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    """One extra peer operation contributed by another plugin."""

    path: str  # below BASE_PATH, e.g. "/ra/claim"
    methods: tuple[str, ...]
    handler: Handler
    name: str = ""


_EXTRA_OPERATIONS: list[Operation] = []


def register_operation(path: str, methods: tuple[str, ...] | list[str], handler: Handler, name: str = "") -> None:
    """Add an operation under ``/signserver/peer/v1`` behind the peer guard (call at import time)."""
    if not path.startswith("/"):
        raise ValueError("operation paths start with '/'")
    _EXTRA_OPERATIONS.append(Operation(path, tuple(m.upper() for m in methods), handler, name or path))


class PeerService:
    """The peer endpoint's state in one server process."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.authorizer = PeerAuthorizer(services.runtime)
        self.recorder = IncomingRecorder(IncomingPeers(services.store.database))
        self.bindings = KeyBindings(services.runtime)
        self.renewal = Renewal(services)

    async def guard(self, request: Request) -> PeerIdentity:
        """Identify, record and authorize the caller; raises 401/403."""
        identity = identity_for_scope(request.scope)
        if identity is None:
            raise AuthenticationError(
                f"{UNAUTHORIZED}: the peer protocol needs a TLS client certificate on every call; "
                "connect with the CA's client certificate (curl --cert/--key, signpeer connector --cert/--key)")
        client = request.client
        await self.recorder.record(identity, client.host if client else "unknown")
        self.authorizer.check(identity)
        return identity

    def endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            identity = await self.guard(request)
            return await handler(request, identity, self)

        run.__name__ = getattr(handler, "__name__", "peer_operation")
        return run


# -- helpers ---------------------------------------------------------------------------------
async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object: ``{}`` for an empty body, 400 for anything but a JSON object.

    Public: peer operations of other plugins (the RA operations of one-time keys) use it too.
    """
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequestError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    return body


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequestError(f"'{name}' must be true or false")
    return value


def _worker_id(service: PeerService, request: Request) -> int:
    return service.bindings.worker(request.path_params["binding"]).id


def _wants_pem(request: Request) -> bool:
    return request.query_params.get("format", "").lower() == "pem" or \
        PKCS10_PEM_TYPE in request.headers.get("accept", "")


async def _chain_from_request(request: Request) -> list[Any]:
    """The certificate chain of an install call: raw PEM/DER body, or JSON ``certificateChain``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("", "application/json"):
        body = await json_body(request)
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
        data = await request.body()
    return load_certificates(data)


# -- operations ------------------------------------------------------------------------------
async def ping(request: Request, identity: PeerIdentity, service: PeerService) -> Response:
    return JSONResponse({
        "protocol": PROTOCOL_NAME, "version": VERSION, "server": f"signpeer {core_version}",
        "time": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "peer": identity.as_json(),
    })


async def list_bindings(request: Request, identity: PeerIdentity, service: PeerService) -> Response:
    body = await anyio.to_thread.run_sync(service.bindings.list_json)
    return Response(body, media_type="application/json")


async def get_binding(request: Request, identity: PeerIdentity, service: PeerService) -> Response:
    binding = await anyio.to_thread.run_sync(service.bindings.get, request.path_params["binding"])
    return JSONResponse(binding)


async def next_key(request: Request, identity: PeerIdentity, service: PeerService) -> Response:
    body = await json_body(request)
    replace = _bool(body, "replace")
    wid = _worker_id(service, request)
    # The binding asks the token for its keys (an HSM round trip): off the event loop too.
    result, binding = await anyio.to_thread.run_sync(
        lambda: (service.renewal.next_key(wid, identity, replace), service.bindings.get(wid)))
    result["keyBinding"] = binding
    return JSONResponse(result, status_code=201 if result["created"] else 200)


async def csr(request: Request, identity: PeerIdentity, service: PeerService) -> Response:
    wid = _worker_id(service, request)
    answer = await anyio.to_thread.run_sync(service.renewal.csr, wid, identity)
    if _wants_pem(request):
        return Response(answer.pem, media_type=PKCS10_PEM_TYPE)
    return JSONResponse({"csr": answer.pem, "keyPairAlias": answer.alias, "subjectDn": answer.subject_dn,
                         "signatureAlgorithm": answer.signature_algorithm, "forNextKey": answer.for_next_key})


async def install(request: Request, identity: PeerIdentity, service: PeerService) -> Response:
    wid = _worker_id(service, request)
    chain = await _chain_from_request(request)
    result, binding = await anyio.to_thread.run_sync(
        lambda: (service.renewal.install(wid, identity, chain), service.bindings.get(wid)))
    result["keyBinding"] = binding
    return JSONResponse(result)


async def set_status(request: Request, identity: PeerIdentity, service: PeerService) -> Response:
    body = await json_body(request)
    wid = _worker_id(service, request)
    binding = await anyio.to_thread.run_sync(
        lambda: (service.renewal.set_status(wid, identity, body.get("status")), service.bindings.get(wid))[1])
    return JSONResponse(binding)


async def openapi(request: Request) -> Response:
    document = openapi_document(__version__)
    for op in _EXTRA_OPERATIONS:  # operations of other plugins (RA mode), described by their docstrings
        summary = (getattr(op.handler, "__doc__", None) or op.name).strip().splitlines()[0]
        document["paths"].setdefault(op.path, {}).update({m.lower(): {
            "summary": summary, "responses": {"200": {"description": "OK"},
                                              "401": {"description": "No client certificate"},
                                              "403": {"description": "Unauthorized"}}} for m in op.methods})
    return JSONResponse(document)


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
    service = PeerService(services)
    services.peer_service = service  # type: ignore[attr-defined]  # for tests and other plugins
    ep = service.endpoint
    table: list[BaseRoute] = [
        Route(f"{BASE_PATH}/ping", ep(ping), methods=["GET", "POST"]),
        Route(f"{BASE_PATH}/openapi.json", openapi, methods=["GET"]),
        Route(f"{BASE_PATH}/keybindings", ep(list_bindings), methods=["GET"]),
        Route(f"{BASE_PATH}/keybindings/{{binding}}", ep(get_binding), methods=["GET"]),
        Route(f"{BASE_PATH}/keybindings/{{binding}}/nextkey", ep(next_key), methods=["POST"]),
        Route(f"{BASE_PATH}/keybindings/{{binding}}/csr", ep(csr), methods=["POST"]),
        Route(f"{BASE_PATH}/keybindings/{{binding}}/certificate", ep(install), methods=["POST", "PUT"]),
        Route(f"{BASE_PATH}/keybindings/{{binding}}/status", ep(set_status), methods=["POST", "PUT"]),
    ]
    for op in _EXTRA_OPERATIONS:
        table.append(Route(f"{BASE_PATH}{op.path}", ep(op.handler), methods=list(op.methods), name=op.name))
    unknown = _unknown(service)
    table.append(Route(f"{PEER_ROOT}/{{version}}/{{rest:path}}", unknown,
                       methods=["GET", "POST", "PUT", "DELETE", "PATCH"]))
    table.append(Route(f"{PEER_ROOT}/{{version}}", unknown, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]))
    return table

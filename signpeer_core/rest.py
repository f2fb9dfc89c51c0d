"""The REST interface in SignServer's shape: signing, worker list, health check, token admin.

Endpoints (``docs/rest-api.md`` has every status code and curl examples):

* ``POST /signserver/rest/v1/workers/{idOrName}/process`` — sign (SignServer's request and
  response JSON); ``{idOrName}`` that is all digits is a worker id, anything else a name.
* ``GET /signserver/rest/v1/workers`` — every worker with ACTIVE/OFFLINE and the reasons, for
  administrators (``WSADMINS``) only.
* ``GET /signserver/rest/v1/openapi.json`` — the OpenAPI 3.1 document of these endpoints.
* ``GET /healthcheck`` — 200 when every enabled worker is ACTIVE, else 503 naming the others.
* ``GET /signserver/healthcheck/signserverhealth`` — SignServer's probe: ``ALLOK`` (200) or the
  error lines (500), plain text.
* ``POST /signserver/rest/v1/workers/{idOrName}/activate`` (``{"authCode": "..."}``) and
  ``.../deactivate`` — crypto token activation in this server process, for administrators
  whose client certificate is in the global property ``WSADMINS``.
* ``POST …/workers/{idOrName}/keys``, ``…/keys/test``, ``…/keys/entries``, ``…/certreq`` —
  generatekey, testkey, querytokenentries and generatecertreq in this server process's (activated) token, for administrators
  (:mod:`signpeer_core.keyadmin`).

``X-Keyfactor-Requested-With`` (any non-empty value) is required, as SignServer requires it, on
the admin calls (activate, deactivate, the key operations) and on ``/process`` with any body that is not
``Content-Type: application/json`` (multipart uploads included). A ``/process`` request with
``Content-Type: application/json`` needs no such header: a browser cannot send that content type
to another site without a CORS preflight, which this server never grants, so a cross-site page
cannot make a visitor's browser sign with it (the header exists to stop exactly that). A
multipart upload (``curl -F file=@doc``) answers the raw result bytes, as SignServer does.

Signing parses the request and hands it to the transport-independent pipeline
(:mod:`signpeer_core.pipeline`: worker lookup, authorization, ``worker.process``, the worker
log line); it reads only memory and calls no hooks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from cryptography import x509
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from signpeer_core.app import REQUEST_ID_KEY, guarded_head
from signpeer_core.audit import Admin
from signpeer_core.directroutes import DirectRoute
from signpeer_core.directsigning import DirectSigning
from signpeer_core.errors import (
    AuthenticationError,
    AuthorizationError,
    BadRequestError,
)
from signpeer_core.formupload import form_request
from signpeer_core.httpserver import (
    basic_credentials,
    basic_credentials_of,
    bearer_token_of,
    json_body,
    receive_body,
)
from signpeer_core.identity import CertificateIdentity
from signpeer_core.largebodies import octet_stream_response
from signpeer_core.mtls import client_certificate
from signpeer_core.pipeline import Caller, TransportRequest, new_request_id
from signpeer_core.processjson import (
    STREAM_RESULTS_FROM,
    process_request_of,
    process_response,
    process_response_streamed,
)
from signpeer_core.refusals import record_refusal
from signpeer_core.roles import ADMIN, holds

if TYPE_CHECKING:
    from signpeer_core.services import Services
    from signpeer_core.workers import Worker

admin_log = logging.getLogger("signpeer.admin")

REQUESTED_WITH = "x-keyfactor-requested-with"
#: Where a TLS connection keeps its :class:`Caller` (the connection's TLS dict lives as long as it).
_CALLER_KEY = "_signpeer_caller"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode(), status_code=status,
                    headers=headers, media_type="application/json")


def caller_of(scope: MutableMapping[str, Any]) -> Caller:
    """The connection's facts for the pipeline, made once per TLS connection and kept with it."""
    tls = scope.get("extensions", {}).get("tls") if "extensions" in scope else None
    if tls:
        caller = tls.get(_CALLER_KEY)
        if caller is not None:
            return caller
    cert = client_certificate(scope)
    client = scope.get("client")
    caller = Caller("REST", CertificateIdentity.from_certificate(cert) if cert is not None else None,
                    client[0] if client else None)
    if tls:
        tls[_CALLER_KEY] = caller
    return caller


def _missing_requested_with() -> BadRequestError:
    return BadRequestError("missing header X-Keyfactor-Requested-With; send it with any value "
                           "(e.g. -H 'X-Keyfactor-Requested-With: XMLHttpRequest'), as SignServer clients do")


def _require_requested_with(request: Request) -> None:
    if not request.headers.get(REQUESTED_WITH):
        raise _missing_requested_with()


_CONTENT_TYPE, _AUTHORIZATION, _REQUESTED_WITH = b"content-type", b"authorization", REQUESTED_WITH.encode()


def _heads(headers: list[tuple[bytes, bytes]]) -> tuple[str, str | None, bool]:
    """(Content-Type, Authorization, whether X-Keyfactor-Requested-With has a value) in one pass
    over the request's headers: the first of each, as Starlette's ``request.headers.get`` reads them."""
    content_type: str | None = None
    authorization: str | None = None
    requested_with: bool | None = None
    for name, value in headers:
        if name == _CONTENT_TYPE:
            if content_type is None:
                content_type = value.decode("latin-1")
        elif name == _AUTHORIZATION:
            if authorization is None:
                authorization = value.decode("latin-1")
        elif name == _REQUESTED_WITH and requested_with is None:
            requested_with = bool(value)
    return content_type or "", authorization, bool(requested_with)


class RestAPI:
    """The endpoints, bound to one process's services."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.runtime = services.runtime
        self.pipeline = services.pipeline
        #: JSON requests to a signer that signs inline, without the pipeline's layers (directsigning.py).
        self.direct = DirectSigning(services.pipeline)
        #: The status read in progress (:meth:`_statuses`), shared by the requests that wait for it.
        self._statuses_running: asyncio.Future[list[dict[str, Any]]] | None = None

    # -- signing -------------------------------------------------------------------------------
    async def process(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Parse SignServer's ProcessRequest, run it through the pipeline, answer its ProcessResponse.

        A plain ASGI app (the route's endpoint is :class:`_ProcessRoute`), not a
        ``Request``/``Response`` function: on a path that costs about a hundred microseconds
        outside the signature, Starlette's request and response objects, their header lookups
        and the body stream were a visible part. Errors are raised as everywhere else (the app's
        error handler answers them).
        """
        started = time.perf_counter()
        # The id GuardMiddleware gave the request (and the client in X-Request-ID).
        request_id = scope.get(REQUEST_ID_KEY) or new_request_id()
        scope[REQUEST_ID_KEY] = request_id
        id_or_name: str = scope["path_params"]["idOrName"]
        caller = caller_of(scope)
        content_type, authorization, requested_with = _heads(scope["headers"])
        # As formupload.media_type reads it; the usual request's type as it is.
        kind = content_type if content_type == "application/json" else content_type.split(";", 1)[0].strip().lower()
        if kind != "application/json" and not requested_with:  # see the module docstring
            exc = _missing_requested_with()
            self.pipeline.refused(request_id, id_or_name, caller, exc, started)
            raise exc
        if kind == "multipart/form-data":
            response = await self._process_multipart(Request(scope, receive), id_or_name, caller, request_id)
            await response(scope, receive, send)
            return

        found = self.direct.find(id_or_name, caller) if authorization is None and kind == "application/json" else None
        if found is not None:  # the usual request, whole in one coroutine (directsigning.py)
            answered = await self.direct.process(found, id_or_name, scope, receive, send, caller, request_id,
                                                 started)
            if answered is None:
                return
            result = answered
        else:
            async def parse() -> TransportRequest:
                payload, metadata = process_request_of(await receive_body(receive))
                if authorization is None:  # no credentials to read (the usual NOAUTH/CLIENTCERT request)
                    return TransportRequest(payload, metadata)
                username, password = basic_credentials_of(authorization)
                return TransportRequest(payload, metadata, username, password, bearer_token_of(authorization))

            result = await self.pipeline.process(id_or_name, parse, caller, request_id)
        if len(result.data) >= STREAM_RESULTS_FROM:  # a large result goes out piece by piece
            await process_response_streamed(result)(scope, receive, send)
            return
        body = process_response(result)
        await send(guarded_head(scope, 200, [(b"content-length", b"%d" % len(body)),
                                             (b"content-type", b"application/json")]))
        await send({"type": "http.response.body", "body": body})

    async def _process_multipart(self, request: Request, id_or_name: str, caller: Caller,
                                 request_id: str) -> Response:
        """A file upload (SignServer's multipart ``/process``): the raw result bytes back."""

        async def parse() -> TransportRequest:
            payload, metadata, _ = await form_request(request)
            username, password = basic_credentials(request)
            return TransportRequest(payload, metadata, username, password)

        result = await self.pipeline.process(id_or_name, parse, caller, request_id)
        return octet_stream_response(result.data)

    # -- status --------------------------------------------------------------------------------
    @staticmethod
    def _describe(worker: Worker) -> dict[str, Any]:
        status = worker.status()
        return {"id": worker.id, "name": worker.name, "type": worker.worker_type,
                "implementation": getattr(type(worker), "type_name", type(worker).__name__),
                "status": status.state, "disabled": worker.disabled, "reasons": status.reasons}

    async def list_workers(self, request: Request) -> Response:
        # Every worker's status and error text is for administrators (as in SignServer);
        # monitoring without a certificate has the health check and the metrics.
        self._require_admin(request)
        return json_response({"workers": await self._statuses()})

    async def _statuses(self) -> list[dict[str, Any]]:
        """Every worker described (:meth:`_describe`), by id, read in a thread (a status may ask an
        HSM, slow and blocking: never on the event loop).

        Requests that come while a read is running wait for that read instead of starting their
        own: a read costs about 10 µs per worker (half a second at 50,000), and a load balancer
        (or a start-up probe) that gives up and asks again before the answer came would otherwise
        pile one more full read onto the server per attempt, each slowing the others, until no
        answer comes within the prober's timeout at all. The read goes on when its requester hangs up
        (``shield``), for those that still wait.
        """
        running = self._statuses_running
        if running is None:
            workers = self.runtime.workers()
            running = asyncio.ensure_future(anyio.to_thread.run_sync(lambda: [self._describe(w) for w in workers]))
            self._statuses_running = running

            def done(_: object) -> None:
                self._statuses_running = None

            running.add_done_callback(done)
        return await asyncio.shield(running)

    async def healthcheck(self, request: Request) -> Response:
        described = [d for d in await self._statuses() if not d["disabled"]]
        offline = [{"id": d["id"], "name": d["name"], "reasons": d["reasons"]}
                   for d in described if d["status"] != "ACTIVE"]
        if offline:
            return json_response({"status": "OFFLINE", "offlineWorkers": offline,
                                  "error": "; ".join(f"{o['name']}: {', '.join(o['reasons'])}" for o in offline)},
                                 status=503)
        return json_response({"status": "ALLCLEAR", "workers": len(described)})

    async def signserverhealth(self, request: Request) -> Response:
        """SignServer's load-balancer probe: ``ALLOK`` (200), or one error line per problem (500).
        Problems: the database cannot be read, or an enabled worker is not ACTIVE."""
        errors: list[str] = []
        try:
            await anyio.to_thread.run_sync(self.services.store.worker_ids)
        except Exception as exc:  # any database failure is what the probe is for
            errors.append(f"Error Connecting to Database: {type(exc).__name__}")
        described = [d for d in await self._statuses() if not d["disabled"]]
        for d in described:
            if d["status"] != "ACTIVE":
                errors.extend(f"Worker {d['id']} ({d['name']}): {reason}" for reason in d["reasons"] or ["OFFLINE"])
        if errors:
            return Response("\n".join(errors) + "\n", status_code=500, media_type="text/plain")
        return Response("ALLOK", media_type="text/plain")

    # -- token administration ----------------------------------------------------------------
    def _require_admin(self, request: Request) -> x509.Certificate:
        """The administrator's certificate; a refusal is recorded (audit log, rate-limited: a
        blocking write at most once a minute per caller, see refusals.py)."""
        cert = client_certificate(request.scope)
        remote = request.client.host if request.client else ""
        if cert is None:
            record_refusal(self.services, "REST", Admin("anonymous (no client certificate)"), request.url.path,
                           "no client certificate", remote)
            raise AuthenticationError("this endpoint needs an administrator's TLS client certificate "
                                      "(e.g. <home>/tls/admin.pem and admin-key.pem)")
        identity = CertificateIdentity.from_certificate(cert)
        rule = identity.rule
        if not holds(ADMIN, rule, self.runtime.global_properties, self.services.settings.node_id):
            admin_log.warning("denied admin access: serial %s, issuer %s", rule.serial_hex, rule.issuer_dn)
            record_refusal(self.services, "REST", identity.as_admin(), request.url.path, "not an administrator",
                           remote)
            raise AuthorizationError(
                f"client certificate (serial {rule.serial_hex}, issuer {rule.issuer_dn}) is not an administrator; "
                f"add it with signpeer wsadmins -add -cert <file> and signpeer reload")
        return cert

    def _worker_admin(self, cert: x509.Certificate) -> Any:
        from signpeer_core.admin import WorkerAdmin

        return WorkerAdmin(self.services, CertificateIdentity.from_certificate(cert).as_admin())

    async def activate(self, request: Request) -> Response:
        _require_requested_with(request)
        cert = self._require_admin(request)
        id_or_name = request.path_params["idOrName"]
        data = await json_body(request)
        code = data.get("authCode", data.get("authenticationCode"))
        if not isinstance(code, str):
            raise BadRequestError('send {"authCode": "<password or PIN>"}')
        admin = self._worker_admin(cert)
        # Activation decrypts a keystore or logs in to an HSM: slow and blocking, so in a thread.
        # WorkerAdmin.activate also re-resolves key and chain of every signer using the token.
        await anyio.to_thread.run_sync(admin.activate, id_or_name, code)
        worker = self.runtime.get(id_or_name)
        admin_log.info("crypto token of worker %s activated by %s (pid %s)", worker.name, admin.admin.name,
                       os.getpid())
        described = await anyio.to_thread.run_sync(self._describe, worker)
        return json_response(described | {"pid": os.getpid()})

    async def deactivate(self, request: Request) -> Response:
        _require_requested_with(request)
        cert = self._require_admin(request)
        id_or_name = request.path_params["idOrName"]
        admin = self._worker_admin(cert)
        await anyio.to_thread.run_sync(admin.deactivate, id_or_name)
        worker = self.runtime.get(id_or_name)
        admin_log.info("crypto token of worker %s deactivated by %s (pid %s)", worker.name, admin.admin.name,
                       os.getpid())
        described = await anyio.to_thread.run_sync(self._describe, worker)
        return json_response(described | {"pid": os.getpid()})


PREFIX = "/signserver/rest/v1"


class _ProcessRoute:
    """The signing endpoint as a plain ASGI app (Starlette wraps functions, not other callables)."""

    __slots__ = ("api",)

    def __init__(self, api: RestAPI) -> None:
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.api.process(scope, receive, send)


def routes(services: Services) -> list[BaseRoute]:
    from signpeer_core.keyadmin import KeyAdminAPI

    api = RestAPI(services)
    keys = KeyAdminAPI(api)
    return [
        # First, and direct: GuardMiddleware calls it around Starlette's routing (directroutes.py).
        DirectRoute(PREFIX + "/workers/{idOrName}/process", _ProcessRoute(api), methods=["POST"],
                    direct=api.process),
        Route(PREFIX + "/workers", api.list_workers, methods=["GET"]),
        Route(PREFIX + "/workers/{idOrName}/activate", api.activate, methods=["POST"]),
        Route(PREFIX + "/workers/{idOrName}/deactivate", api.deactivate, methods=["POST"]),
        Route(PREFIX + "/workers/{idOrName}/keys", keys.generate_key, methods=["POST"]),
        Route(PREFIX + "/workers/{idOrName}/keys/test", keys.test_key, methods=["POST"]),
        Route(PREFIX + "/workers/{idOrName}/keys/entries", keys.entries, methods=["POST"]),
        Route(PREFIX + "/workers/{idOrName}/certreq", keys.certificate_request, methods=["POST"]),
        Route("/healthcheck", api.healthcheck, methods=["GET"]),
        Route(PREFIX + "/openapi.json", _openapi, methods=["GET"]),
        Route("/signserver/healthcheck/signserverhealth", api.signserverhealth, methods=["GET"]),
    ]


async def _openapi(request: Request) -> Response:
    """The OpenAPI document of these endpoints (:mod:`signpeer_core.openapi`)."""
    from signpeer_core.openapi import openapi_document

    return json_response(openapi_document())

"""The Starlette application of a server process: routes, error mapping, body limit, reload.

:func:`create_app` builds the app from a :class:`Services`: the routes come from every plugin
(``Registry.routes``), errors are mapped to JSON in exactly one place, request bodies are
limited while they stream in, and the lifespan registers the process in the node registry and
starts the task that follows pushed configuration changes (:mod:`signpeer_core.membership`), so
that ``signpeer reload`` run from another process or node takes effect in every server process.

:func:`create_app_from_env` is the factory uvicorn imports in each process of
``signpeer serve --workers N``: it reads the settings the parent passed through ``SIGNPEER_*``
environment variables (see :mod:`signpeer_core.server`).

Error responses are always ``{"error": "<message>"}``. A :class:`SignpeerError` keeps its own
status and message; anything unexpected becomes a 500 that names a request id, and the
traceback goes only to the server log under that id.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, MutableMapping
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp

from signpeer_core import affinity, clientcas, collector, tracing
from signpeer_core.directroutes import DirectRoutes
from signpeer_core.errors import ClientAbortError, RequestTooLargeError, SignpeerError
from signpeer_core.logconfig import configure_logging, request_id_var
from signpeer_core.membership import Membership, follow_changes
from signpeer_core.metrics import process_exited
from signpeer_core.pipeline import new_request_id
from signpeer_core.tlsrefusals import serving

if TYPE_CHECKING:
    from signpeer_core.services import Services

log = logging.getLogger("signpeer.server")

#: Scope key where a route stores its request id, so a 500 names the same id as the worker log.
REQUEST_ID_KEY = "signpeer.request_id"


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}, ensure_ascii=False).encode()


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(message), status_code=status, headers=headers, media_type="application/json")


async def _send_error(send: Any, status: int, message: str, *extra: tuple[bytes, bytes]) -> None:
    body = error_body(message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            NOSNIFF, *extra]})
    await send({"type": "http.response.body", "body": body})


#: On every response: a browser must not guess another type than the one sent (a signature or an
#: uploaded file is never run as a script or shown as HTML).
NOSNIFF = (b"x-content-type-options", b"nosniff")
#: Key of an ``http.response.start`` message whose headers already hold ``NOSNIFF`` and the
#: request's ``X-Request-ID`` (:func:`guarded_head`): GuardMiddleware sends it as it is.
GUARDED = "signpeer.guarded"


def guarded_head(scope: MutableMapping[str, Any], status: int, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The ``http.response.start`` message of a route on the hot path, with the headers
    GuardMiddleware adds to every response already in place (no copy of the list there)."""
    headers.append(NOSNIFF)
    headers.append((b"x-request-id", scope[REQUEST_ID_KEY].encode()))
    return {"type": "http.response.start", "status": status, "headers": headers, GUARDED: True}


class GuardMiddleware:
    """Outermost pure-ASGI middleware: body size limit, ``X-Content-Type-Options: nosniff`` on
    every response, and the last line against 500s.

    Pure ASGI rather than ``BaseHTTPMiddleware``: it costs a function call per request, not a
    task and a stream. The limit is enforced twice: an announced ``Content-Length`` over it is
    refused before anything is read, and a chunked body is counted as it streams in, so a
    client cannot make the server buffer more than the limit either way.
    """

    def __init__(self, app: Any, max_body_size: int, direct: DirectRoutes | None = None) -> None:
        self.app = app
        self.max_body_size = max_body_size
        #: Routes called directly, around Starlette's exception middleware and router
        #: (:mod:`signpeer_core.directroutes`); None (tracing on) when every request goes that way.
        self.direct = direct or None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Every request gets its id here: the client gets it in X-Request-ID, every log line
        # written for the request carries it (logconfig.request_id_var), a route may name it.
        request_id = scope[REQUEST_ID_KEY] = new_request_id()
        request_id_var.set(request_id)
        id_header = (b"x-request-id", request_id.encode())
        limit = self.max_body_size
        announced: int | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                if announced is not None:
                    continue
                try:
                    announced = int(value)
                except ValueError:
                    await _send_error(send, 400, "bad Content-Length header", id_header)
                    return
                if announced > limit:
                    await _send_error(send, 413, _too_large(limit), id_header)
                    return
            elif name == b"transfer-encoding":
                chunked = True
        started = False

        # A plain function that returns what ``send`` returns (ASGI's send need only return an
        # awaitable): a coroutine of its own around every message cost about 700 instructions.
        def tracking_send(message: dict[str, Any]) -> Awaitable[None]:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if message.get(GUARDED):  # a direct route sent both headers itself (guarded_head)
                    del message[GUARDED]
                    return send(message)
                headers = list(message.get("headers", ()))
                nosniff = named = False
                for name, _ in headers:
                    name = name.lower()
                    if name == NOSNIFF[0]:
                        nosniff = True
                    elif name == b"x-request-id":  # a route may set it
                        named = True
                if not nosniff:
                    headers.append(NOSNIFF)
                if not named:
                    headers.append(id_header)
                message = {**message, "headers": headers}
            return send(message)

        # A body framed by its announced Content-Length (checked above) cannot grow past it: the
        # HTTP parser hands the app exactly that many bytes, and the next ones are the next
        # request. Only a chunked body (or one without a length) is counted as it comes.
        receiving = receive if announced is not None and not chunked else _limited(receive, limit)
        try:
            direct = self.direct.find(scope) if self.direct is not None else None
            if direct is None:
                await self.app(scope, receiving, tracking_send)
            else:
                try:
                    await direct(scope, receiving, tracking_send)
                except SignpeerError as exc:  # answered as the app's exception handler answers it
                    if started:
                        raise
                    response: Any = _signpeer_error_response(exc)
                    await response(scope, receiving, tracking_send)
        except (ClientDisconnect, ClientAbortError):  # the client hung up: no one to answer, nothing broke
            log.info("client %s closed the connection during %s %s", _client(scope), scope.get("method"),
                     scope.get("path"))
        except Exception:
            request_id = scope.get(REQUEST_ID_KEY) or request_id
            log.exception("internal error (request id %s) on %s %s", request_id, scope.get("method"), scope.get("path"))
            if not started:
                await _send_error(send, 500, f"internal error (request id {request_id}); see the server log",
                                  (b"x-request-id", request_id.encode()))


def _limited(receive: Any, limit: int) -> Any:
    """``receive`` counting the body's bytes, raising :class:`RequestTooLargeError` past ``limit``."""
    received = 0

    async def limited_receive() -> dict[str, Any]:
        nonlocal received
        message: dict[str, Any] = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise RequestTooLargeError(_too_large(limit))
        return message

    return limited_receive


def _client(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


def _too_large(limit: int) -> str:
    return (f"request body is larger than the limit of {limit} bytes; send less data or raise "
            f"max_body_size in signpeer.toml (or SIGNPEER_MAX_BODY_SIZE)")


def _signpeer_error_response(exc: SignpeerError) -> Response:
    headers = getattr(exc, "headers", None)
    return error_response(exc.status, exc.message, headers)


async def _signpeer_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignpeerError)
    return _signpeer_error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}; see docs/rest-api.md"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"method {request.method} is not allowed on {request.url.path}; use {allowed}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, dict(exc.headers or {}))


class _App(Starlette):
    """Starlette without its ``ServerErrorMiddleware``: :class:`GuardMiddleware`, outermost,
    answers every unexpected error itself (a 500 naming the request id), so that layer only
    cost a call and a wrapped ``send`` per request."""

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return stack.app if isinstance(stack, ServerErrorMiddleware) else stack


def create_app(services: Services, owns_services: bool = False, freeze_startup: bool = False) -> Starlette:
    """The app of one server process. ``owns_services``: close them on shutdown.
    ``freeze_startup``: once started, freeze what start-up loaded for the garbage collector
    (:mod:`signpeer_core.collector`; a server process's own choice, not a test's)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from signpeer_core.server import url_for

        settings = services.settings
        membership = Membership(services, url_for(settings.host, settings.port))
        await anyio.to_thread.run_sync(membership.join)
        if freeze_startup:
            collector.freeze_startup()  # before the first request: none of its objects is frozen
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow_changes, services, membership)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
        await anyio.to_thread.run_sync(membership.leave)
        process_exited()  # this process's live gauges leave the sum of a multi-process server
        await anyio.to_thread.run_sync(tracing.shutdown)  # the spans still queued are sent
        if owns_services:
            services.close()

    routes = services.registry.routes(services)
    # With tracing on, every request goes through the trace-context middleware and the Router.
    direct = DirectRoutes(routes) if tracing.tracer is None else None
    app = _App(
        routes=routes,
        middleware=[Middleware(GuardMiddleware, max_body_size=services.settings.max_body_size, direct=direct)]
        + ([Middleware(tracing.TraceContextMiddleware)] if tracing.tracer is not None else []),
        exception_handlers={SignpeerError: _signpeer_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.services = services
    serving(services)  # refused TLS client certificates are reported with these services
    # The client CAs this process trusts: which CA key issued a client certificate (clientcas.py).
    clientcas.set_trusted(clientcas.load(services.settings.tls_client_cafiles))
    return app


def create_app_from_env() -> Starlette:
    """uvicorn factory for multi-process mode: settings from ``SIGNPEER_HOME`` and ``SIGNPEER_*``."""
    from signpeer_core.server import check_tls_files, install_connection_guard
    from signpeer_core.services import Services
    from signpeer_core.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    affinity.pin(settings.cpu_affinity)  # this process's CPU (its index is in the environment), before threads start
    install_connection_guard(settings, check_tls_files(settings))
    tracing.start(settings)  # this process's own tracer provider (spawned: nothing inherited)
    services = Services.open(settings)
    return create_app(services, owns_services=True, freeze_startup=True)

"""Two apps on the same services, one calling the direct routes and one sending every request
through Starlette's exception middleware and router, driven in process over ASGI; and the check
that both answer the same (:mod:`signpeer_core.directroutes` promises exactly that).

Used by the core's tests of the direct routes and by a plugin's tests of its own direct route.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from signpeer_core.app import GuardMiddleware, create_app


def direct_and_general_apps(services: Any) -> tuple[Any, Any]:
    """(direct, general): the app as it serves, and one whose every request goes the general way."""
    # Any: Starlette types middleware_stack as a plain ASGI callable, set here to the built stack.
    direct: Any = create_app(services)
    general: Any = create_app(services)
    stack = general.build_middleware_stack()
    assert isinstance(stack, GuardMiddleware) and stack.direct is not None
    stack.direct = None  # every request through ExceptionMiddleware and the Router
    general.middleware_stack = stack
    built = direct.build_middleware_stack()
    assert isinstance(built, GuardMiddleware) and built.direct is not None
    direct.middleware_stack = built
    return direct, general


def asgi_request(app: Any, method: str, path: str, client_cert: x509.Certificate | None = None,
                 **kwargs: Any) -> httpx.Response:
    """One request to ``app`` in process; ``client_cert`` is put where the TLS layer puts it (the
    connection's ``tls`` extension)."""
    async def with_certificate(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if client_cert is not None and scope["type"] == "http":
            scope = {**scope, "extensions": {"tls": {"client_cert_der": client_cert.public_bytes(Encoding.DER)}}}
        await app(scope, receive, send)

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=with_certificate)
        async with httpx.AsyncClient(transport=transport, base_url="https://signpeer.test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(run())


def assert_same_response(direct: httpx.Response, general: httpx.Response, byte_for_byte: bool = False) -> None:
    """Same status, headers (the X-Request-ID value aside) and body: byte for byte, or (the default)
    in a JSON body the request and archive ids, and the request id a 500's message names, aside."""
    assert direct.status_code == general.status_code
    one, other = dict(direct.headers), dict(general.headers)
    assert one.pop("x-request-id") and other.pop("x-request-id")
    assert one == other
    assert direct.headers["x-content-type-options"] == "nosniff"
    if byte_for_byte:
        assert direct.content == general.content
    elif direct.headers.get("content-type") == "application/json":
        a, b = direct.json(), general.json()
        if isinstance(a, dict) and isinstance(b, dict):
            for key in ("requestId", "archiveId"):
                if key in a:
                    assert a.pop(key) and b.pop(key)
            if "error" in a:  # a 500 names its own request id
                a["error"] = a["error"].replace(direct.headers["x-request-id"], "<id>")
                b["error"] = b["error"].replace(general.headers["x-request-id"], "<id>")
        assert a == b
    else:
        assert direct.content == general.content

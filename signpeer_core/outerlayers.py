"""The ASGI layers between a connection and the app's outermost middleware, and when a request
may skip them.

uvicorn calls ``ProxyHeadersMiddleware(app)`` (its default ``proxy_headers=True``), and that
calls Starlette's entry (``Starlette.__call__``), which puts the app into the scope and calls the
middleware stack (:class:`~signpeer_core.app.GuardMiddleware` first). For most requests the two
layers do nothing but that: the proxy-header middleware changes a request's scope only when the
connection's client is one of ``forwarded_allow_ips`` (uvicorn's default: ``127.0.0.1`` and
``::1``) and the request has an ``X-Forwarded-For`` or ``X-Forwarded-Proto`` header. Each layer
still costs a coroutine call and a look at the headers per request.

:func:`inner_stack` gives the connection gate (``connections._WatchedApp``) what it may call
instead, once per connection; the gate decides per request from the headers it reads anyway: a request with one of those headers goes through
the whole stack as before (the middleware judges the client and the headers itself); any other
request gets ``scope["app"]`` as Starlette's entry sets it and goes to the middleware stack at
once. The stack is the one Starlette built (on the lifespan's start-up, or by the first request: a
connection opened before then calls the whole app for all its requests). Any other app (not uvicorn's middleware around a
Starlette app, or another set of layers) is always called whole.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

#: The request headers ``ProxyHeadersMiddleware`` reads (the only thing it reads beside the client).
FORWARDED = frozenset((b"x-forwarded-for", b"x-forwarded-proto"))


def inner_stack(app: Any) -> tuple[Starlette, Any] | None:
    """(the Starlette app, its middleware stack) under ``app`` when ``app`` is uvicorn's
    proxy-header middleware around a Starlette app whose stack is built: a request without a
    forwarded header may set ``scope["app"]`` and call that stack itself. None otherwise: every
    request calls ``app`` (see the module docstring). Asked once per connection."""
    if type(app) is not ProxyHeadersMiddleware:
        return None
    starlette = app.app
    if (not isinstance(starlette, Starlette) or type(starlette).__call__ is not Starlette.__call__
            or starlette.middleware_stack is None):
        return None
    return starlette, starlette.middleware_stack

"""Routes the app's outermost middleware calls directly, around Starlette's routing layers.

A request to the signing endpoint (``POST …/workers/{idOrName}/process``) would otherwise pass
through Starlette's ``ExceptionMiddleware`` (a wrapped ``send`` per message), its ``Router``
(a regular expression and a child scope per route tried) and the ``Route`` (the method check):
on a path that costs about a hundred microseconds outside the signature, each is visible.
:class:`GuardMiddleware <signpeer_core.app.GuardMiddleware>` asks :class:`DirectRoutes` first
and calls a matching route's ASGI app itself, mapping a :class:`SignpeerError` to its error
answer exactly as the app's exception handler does (``app._signpeer_error``); anything else
goes the usual way.

Only what the Router would pick anyway is taken: a :class:`DirectRoute` is direct when it and
every route before it in the app's list are direct (the Router tries routes in order, and the
first full match wins), its endpoint is a plain ASGI app (no ``Request`` wrapper, which needs
the exception middleware), its path parameters are plain strings, the method is one of its
methods, and the request has no ``root_path``. Any other request (another method on the same
path, which answers 405, a path with a trailing slash, a mounted app) goes through the Router,
which gives the answers it always gave.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from starlette.convertors import StringConvertor
from starlette.routing import BaseRoute, Route


class DirectRoute(Route):
    """A :class:`~starlette.routing.Route` whose endpoint (a plain ASGI app) the app's outermost
    middleware may call without Starlette's routing layers (see the module docstring).

    ``direct``: what the middleware calls instead of the endpoint, when the endpoint is only a
    callable object around it (Starlette wraps a function or method endpoint in a ``Request``
    adapter, so a route's ASGI endpoint cannot be a bound method): one coroutine less per request.
    """

    def __init__(self, path: str, endpoint: Any, *, direct: Any = None, **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.direct = direct if direct is not None else endpoint


class DirectRoutes:
    """The leading direct routes of an app's route list, matched by method and path."""

    __slots__ = ("_routes",)

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._routes: list[tuple[frozenset[str], re.Pattern[str], Any]] = []
        for route in routes:
            if not (isinstance(route, DirectRoute) and route.app is route.endpoint and route.methods
                    and all(isinstance(c, StringConvertor) for c in route.param_convertors.values())):
                break  # the Router would try this one next: every later route goes through it
            self._routes.append((frozenset(route.methods), route.path_regex, route.direct))

    def __bool__(self) -> bool:
        return bool(self._routes)

    def find(self, scope: dict[str, Any]) -> Any:
        """The app of the route the Router would choose for this request, with ``path_params``
        set in ``scope`` as the Router sets them (an ASGI app: called with this module's callers'
        own ``receive`` and ``send``); None when the request must go the usual way."""
        if scope.get("root_path"):
            return None
        method, path = scope["method"], scope["path"]
        for methods, regex, app in self._routes:
            match = regex.match(path)
            if match is not None:
                if method not in methods:
                    return None  # the Router answers 405 with its Allow header
                params = scope.get("path_params")
                scope["path_params"] = {**params, **match.groupdict()} if params else match.groupdict()
                return app
        return None

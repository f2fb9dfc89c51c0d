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

A direct route further down the list (another plugin's, after the built-in API's routes) is direct
too when no route before it matches, with any method, a path it matches (checked once, when the
table is built): the Router would come to it and take it. For a literal path (no parameters) the
earlier routes are asked with that path; for a path with plain string parameters (the peer
endpoint's ``…/keybindings/{binding}/nextkey``) their path templates are compared segment by
segment, and they must differ in a literal segment or in their number of segments (a ``path``
parameter, or any other convertor, may match several segments: such an earlier route is taken to
match). Routes that match on more than the path (``Host``) end this: nothing after them is direct.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from starlette.convertors import IntegerConvertor, StringConvertor
from starlette.routing import BaseRoute, Match, Mount, Route, WebSocketRoute


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

    __slots__ = ("_routes", "_literal")

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        #: The leading direct routes, then the later ones with string parameters: (methods, path
        #: regex, app). No path matches two of them, nor one of them and a literal one below (a
        #: later route is taken only when no earlier route may match its paths), so the order
        #: they are tried in changes nothing.
        self._routes: list[tuple[frozenset[str], re.Pattern[str], Any]] = []
        #: Direct routes after the leading ones: literal path -> (methods, app).
        self._literal: dict[str, tuple[frozenset[str], Any]] = {}
        leading = True
        for index, route in enumerate(routes):
            plain = isinstance(route, DirectRoute) and route.app is route.endpoint and route.methods
            if not (isinstance(route, DirectRoute) and plain and route.methods):
                leading = False  # the Router would try this one next: no later route is direct by position
                continue
            if leading and all(isinstance(c, StringConvertor) for c in route.param_convertors.values()):
                self._routes.append((frozenset(route.methods), route.path_regex, route.direct))
                continue
            leading = False
            if not route.param_convertors:
                if _unmatched(route.path, routes[:index]):
                    self._literal.setdefault(route.path, (frozenset(route.methods), route.direct))
            elif all(isinstance(c, StringConvertor) for c in route.param_convertors.values()) and \
                    _disjoint(route, routes[:index]):
                self._routes.append((frozenset(route.methods), route.path_regex, route.direct))

    def __bool__(self) -> bool:
        return bool(self._routes or self._literal)

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
                    return None  # the Router answers (405 with its Allow header, or a route of that method)
                params = scope.get("path_params")
                scope["path_params"] = {**params, **match.groupdict()} if params else match.groupdict()
                return app
        literal = self._literal.get(path) if self._literal else None
        if literal is None or method not in literal[0]:
            return None  # not direct, or another method: the Router answers (405 with its Allow header)
        if "path_params" not in scope:
            scope["path_params"] = {}
        return literal[1]


def _unmatched(path: str, earlier: Sequence[BaseRoute]) -> bool:
    """Whether none of the ``earlier`` routes matches ``path`` (a literal path), with any method."""
    for route in earlier:
        if not isinstance(route, (Route, Mount, WebSocketRoute)):
            return False  # Host, or a route of another kind: it may match on more than the path
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
            scope: dict[str, Any] = {"type": "http", "path": path, "root_path": "", "method": method, "headers": []}
            if route.matches(scope)[0] != Match.NONE:
                return False
    return True


#: A template segment that may match any number of path segments (a ``path`` parameter, a convertor
#: of another plugin's, or a mount's rest).
_ANY = None


def _segments(route: BaseRoute) -> list[str | None] | None:
    """A route's path template by segment: a literal, ``""`` for one segment of any text, or
    :data:`_ANY` (any number of segments); None for a route that may match on more than the path."""
    if isinstance(route, (Route, WebSocketRoute)):
        path, mounted = route.path, False
    elif isinstance(route, Mount):
        path, mounted = route.path, True
    else:
        return None  # Host, or a route of another kind
    convertors = route.param_convertors
    segments: list[str | None] = []
    for part in path.split("/"):
        if "{" not in part:
            segments.append(part)
            continue
        names = re.findall(r"{([^}:]+)", part)
        one = all(isinstance(convertors.get(n), (StringConvertor, IntegerConvertor)) for n in names)
        segments.append("" if one else _ANY)  # "{a}.json": a subset of one segment, taken as any
    if mounted:
        segments.append(_ANY)  # a mount matches its path and everything below it
    return segments


def _overlap(one: list[str | None], other: list[str | None]) -> bool:
    """Whether two path templates (:func:`_segments`) may match the same path."""
    for a, b in zip(one, other, strict=False):
        if a is _ANY or b is _ANY:
            return True
        if a and b and a != b:
            return False  # two different literal segments
    if len(one) == len(other):
        return True
    longer = one if len(one) > len(other) else other
    return _ANY in longer[min(len(one), len(other)):]  # "any number" may be none


def _disjoint(route: Route, earlier: Sequence[BaseRoute]) -> bool:
    """Whether none of the ``earlier`` routes matches, with any method, a path ``route`` matches."""
    mine = _segments(route)
    assert mine is not None
    for other in earlier:
        theirs = _segments(other)
        if theirs is None or _overlap(mine, theirs):
            return False
    return True

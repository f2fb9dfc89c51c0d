"""The signing route called directly by GuardMiddleware (signpeer_core/directroutes.py) answers
exactly as it does through Starlette's exception middleware and router: the same statuses, bodies
and headers, for signatures and for every error, and what it must not take goes the usual way.

Two apps on the same services: the app as it is built, and the same app with the direct routes
switched off (every request through the Router), each driven in process over ASGI (what is
compared is the routing inside the app; TLS and uvicorn are the same for both and covered by the
server tests, e.g. tests/test_rest.py and tests/test_fast_paths.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from signpeer_core.directroutes import DirectRoute, DirectRoutes
from signpeer_core.testing import PKI, add_signer
from signpeer_core.testing.directapps import asgi_request, assert_same_response, direct_and_general_apps

PROCESS = "/signserver/rest/v1/workers/{}/process"


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Any:
    from signpeer_core.testing import open_services, write_home

    home = write_home(tmp_path_factory.mktemp("direct") / "home", pki, "max_body_size = 4096\n")
    services = open_services(home)
    # Ed25519: the same input gives the same signature, so the answers compare whole.
    add_signer(services, pki, "Open", keyalg="Ed25519", keyspec="Ed25519", AUTHTYPE="NOAUTH")
    add_signer(services, pki, "Certs", keyalg="Ed25519", keyspec="Ed25519")  # AUTHTYPE CLIENTCERT (the default)
    add_signer(services, pki, "Users", keyalg="Ed25519", keyspec="Ed25519", AUTHTYPE="USERNAME")
    yield direct_and_general_apps(services)
    services.close()


JSON = {"Content-Type": "application/json"}
SIGN = json.dumps({"data": base64.b64encode(b"to be signed").decode(), "encoding": "BASE64",
                   "metaData": {"k": "v"}})


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), [
    ("POST", PROCESS.format("Open"), {"content": SIGN, "headers": JSON}, 200),
    ("POST", PROCESS.format("Open"), {"content": json.dumps({"data": "text"}), "headers": JSON}, 200),
    ("POST", PROCESS.format("1"), {"content": SIGN, "headers": JSON}, 200),  # by id
    ("POST", PROCESS.format("NoSuchWorker"), {"content": SIGN, "headers": JSON}, 404),
    ("POST", PROCESS.format("Certs"), {"content": SIGN, "headers": JSON}, 403),  # no authorized client: 403
    ("POST", PROCESS.format("Users"), {"content": SIGN, "headers": JSON}, 401),  # 401 with WWW-Authenticate
    ("POST", PROCESS.format("Open"), {"content": "{not json", "headers": JSON}, 400),
    ("POST", PROCESS.format("Open"), {"content": json.dumps({"encoding": "BASE64"}), "headers": JSON}, 400),
    ("POST", PROCESS.format("Open"), {"content": json.dumps({"data": "!!", "encoding": "BASE64"}), "headers": JSON}, 400),
    ("POST", PROCESS.format("Open"), {"content": SIGN, "headers": {"Content-Type": "text/plain"}}, 400),  # no X-Keyfactor-…
    ("POST", PROCESS.format("Open"), {"content": "x" * 5000, "headers": JSON}, 413),  # announced over the limit: 413
    ("POST", PROCESS.format("Open"), {"files": {"file": ("doc.txt", b"a document")},
                                      "headers": {"X-Keyfactor-Requested-With": "1"}}, 200),  # multipart: raw bytes
    ("GET", PROCESS.format("Open"), {}, 405),  # 405 with Allow: the Router's answer
    ("POST", PROCESS.format("Open") + "/", {"content": SIGN, "headers": JSON}, 307),  # the Router redirects
    ("POST", "/signserver/rest/v1/workers/a/b/process", {"content": SIGN, "headers": JSON}, 404),
])
def test_the_direct_route_answers_as_the_router_does(apps: Any, method: str, path: str, kwargs: dict[str, Any],
                                                     status: int) -> None:
    direct, general = apps
    first, second = asgi_request(direct, method, path, **kwargs), asgi_request(general, method, path, **kwargs)
    assert first.status_code == status, first.text
    assert_same_response(first, second)


def test_a_streamed_body_over_the_limit_is_refused_alike(apps: Any) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams in
        for _ in range(10):
            yield b"x" * 1000

    direct, general = apps
    answers = [asgi_request(app, "POST", PROCESS.format("Open"), content=chunks(), headers=JSON) for app in apps]
    assert_same_response(answers[0], answers[1])
    assert answers[0].status_code == 413 and "max_body_size" in answers[0].json()["error"]


def test_a_signature_names_the_request_id_the_client_got(apps: Any) -> None:
    direct, _ = apps
    answer = asgi_request(direct, "POST", PROCESS.format("Open"), content=SIGN, headers=JSON)
    assert answer.status_code == 200
    assert answer.json()["requestId"] == answer.headers["x-request-id"]
    assert list(answer.headers).count("x-request-id") == 1
    assert list(answer.headers).count("x-content-type-options") == 1


def test_only_leading_plain_asgi_routes_are_direct() -> None:
    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        """A plain ASGI app."""

    class App:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            """A plain ASGI app (an object: Starlette calls it as it is)."""

    from starlette.routing import Route

    first = DirectRoute("/a/{x}", App(), methods=["POST"])
    table = DirectRoutes([first, Route("/c/{z}", App(), methods=["GET"]), DirectRoute("/c/{y}", App(), methods=["POST"])])
    scope: dict[str, Any] = {"method": "POST", "path": "/a/1", "root_path": ""}
    assert table.find(scope) is first.app and scope["path_params"] == {"x": "1"}
    assert table.find({"method": "GET", "path": "/a/1"}) is None  # the Router answers 405
    assert table.find({"method": "POST", "path": "/c/1"}) is None  # after a route that is not direct and matches its paths
    assert table.find({"method": "POST", "path": "/a/1", "root_path": "/mounted"}) is None
    assert not DirectRoutes([DirectRoute("/a", endpoint, methods=["POST"])])  # a function: needs the Request wrapper
    assert not DirectRoutes([DirectRoute("/a/{n:int}", App(), methods=["POST"])])  # converted parameters


def test_a_later_direct_route_is_direct_for_its_literal_path_when_nothing_before_matches_it() -> None:
    class App:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            """A plain ASGI app."""

    from starlette.routing import Host, Mount, Route

    later = DirectRoute("/peer/claim", App(), methods=["POST"])
    table = DirectRoutes([Route("/rest/{x}", App(), methods=["GET"]), later])
    scope: dict[str, Any] = {"method": "POST", "path": "/peer/claim", "root_path": ""}
    assert table.find(scope) is later.app and scope["path_params"] == {}
    assert table.find({"method": "GET", "path": "/peer/claim"}) is None  # the Router answers (405)
    assert table.find({"method": "POST", "path": "/peer/claim/"}) is None  # the Router redirects
    # An earlier route that matches the path with any method, or a mount around it: the Router's.
    for earlier in (Route("/peer/{op}", App(), methods=["GET"]), Mount("/peer", App()),
                    Host("signpeer.test", App())):
        assert DirectRoutes([earlier, later]).find({"method": "POST", "path": "/peer/claim"}) is None



def test_a_later_direct_route_with_parameters_is_direct_when_no_earlier_route_can_match_its_paths() -> None:
    class App:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            """A plain ASGI app."""

    from starlette.routing import Host, Mount, Route

    later = DirectRoute("/peer/items/{item}/op", App(), methods=["POST"])
    # Earlier routes that differ in a literal segment or in their number of segments.
    earlier = [Route("/rest/{x}", App(), methods=["GET"]), Route("/peer/items", App()),
               Route("/peer/items/{item}", App()), Route("/peer/items/{item}/other", App()),
               Route("/peer/{a}/{b}/{c}/{d}", App()), Mount("/static", App())]
    table = DirectRoutes([*earlier, later])
    scope: dict[str, Any] = {"method": "POST", "path": "/peer/items/7/op", "root_path": ""}
    assert table.find(scope) is later.app and scope["path_params"] == {"item": "7"}
    assert table.find({"method": "GET", "path": "/peer/items/7/op"}) is None  # the Router answers
    assert table.find({"method": "POST", "path": "/peer/items/7/op/"}) is None
    assert table.find({"method": "POST", "path": "/peer/items/a/b/op"}) is None
    # An earlier route that may match one of its paths: a parameter where it has a literal, a
    # path parameter, a converted parameter, a mount around it, a host.
    for before in (Route("/peer/{kind}/{item}/op", App(), methods=["GET"]), Route("/peer/items/{item}/{op}", App()),
                   Route("/peer/{rest:path}", App()), Route("/peer/items/{n:int}/op", App()),
                   Route("/{a}/{b}/{c}/{d}", App()), Mount("/peer", App()), Host("signpeer.test", App())):
        assert not DirectRoutes([before, later]), before

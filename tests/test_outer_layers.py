"""The connection gate calls the app's middleware stack itself for a request without a forwarded
header (``signpeer_core/outerlayers.py``): uvicorn's proxy-header middleware and Starlette's entry
are skipped only where they would change nothing.

* In process: the same requests through the gate's wrapper and through uvicorn's middleware as
  uvicorn calls it reach the route with the same scope (client, scheme, app); the middleware is
  called exactly for the requests with ``X-Forwarded-For`` or ``X-Forwarded-Proto``.
* A real server: a loopback client's ``X-Forwarded-For`` still names the remote address in the
  worker log (uvicorn's default trusts loopback), and a request without it logs the peer.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from signpeer_core.connections import _WatchedApp
from signpeer_core.testing import PKI, ServerProcess, add_signer, client_context, open_services, wait_until, write_home


class _Gate:
    """What the wrapper tells the connection gate (the gate's state machine is not under test)."""

    corked = None

    def __init__(self) -> None:
        self.events: list[str] = []

    def request_started(self, has_body: bool) -> None:
        self.events.append("started")

    def body_complete(self) -> None:
        self.events.append("body")

    def response_complete(self) -> None:
        self.events.append("done")


async def _seen(request: Request) -> JSONResponse:
    client = request.client
    return JSONResponse({"client": [client.host, client.port] if client else None, "scheme": request.url.scheme,
                         "app": request.scope["app"] is request.app and type(request.app).__name__})


def _app() -> Starlette:
    app = Starlette(routes=[Route("/seen", _seen, methods=["GET"])])
    app.middleware_stack = app.build_middleware_stack()  # as the lifespan's start-up (or a first request) builds it
    return app


def _call(app: Any, client: tuple[str, int], headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "https",
             "path": "/seen", "raw_path": b"/seen", "root_path": "", "query_string": b"", "headers": list(headers),
             "client": client, "server": ("127.0.0.1", 8443)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


REQUESTS = [
    (("127.0.0.1", 50000), []),
    (("127.0.0.1", 50000), [(b"x-forwarded-for", b"203.0.113.7")]),
    (("127.0.0.1", 50000), [(b"x-forwarded-for", b"203.0.113.7:4711, 198.51.100.2")]),
    (("127.0.0.1", 50000), [(b"x-forwarded-proto", b"http")]),
    (("127.0.0.1", 50000), [(b"x-forwarded-proto", b"bogus"), (b"x-forwarded-for", b"")]),
    (("::1", 50000), [(b"x-forwarded-for", b"2001:db8::1")]),
    (("192.0.2.9", 50000), [(b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"http")]),
    (("192.0.2.9", 50000), [(b"user-agent", b"test")]),
]


@pytest.mark.parametrize(("client", "headers"), REQUESTS)
def test_the_route_sees_what_uvicorns_middleware_gives_it(client: tuple[str, int], headers: list[tuple[bytes, bytes]],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app()
    proxied = ProxyHeadersMiddleware(app, trusted_hosts="127.0.0.1,::1")  # uvicorn's default trust
    expected = _call(proxied, client, headers)
    calls: list[int] = []
    original = ProxyHeadersMiddleware.__call__

    async def counted(self: ProxyHeadersMiddleware, scope: Any, receive: Any, send: Any) -> None:
        calls.append(1)
        await original(self, scope, receive, send)

    monkeypatch.setattr(ProxyHeadersMiddleware, "__call__", counted)
    gate = _Gate()
    assert _call(_WatchedApp(proxied, gate), client, headers) == expected  # type: ignore[arg-type]
    assert json.loads(expected[1])["app"] == "Starlette"
    forwarded = any(name.startswith(b"x-forwarded-") for name, _ in headers)
    assert len(calls) == (1 if forwarded else 0)
    assert gate.events == ["started", "done"]


def test_an_app_stack_not_built_yet_is_called_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    app = Starlette(routes=[Route("/seen", _seen, methods=["GET"])])  # no stack until its first call
    wrapper = _WatchedApp(ProxyHeadersMiddleware(app), _Gate())  # type: ignore[arg-type]
    status, body = _call(wrapper, ("127.0.0.1", 1), [])
    assert status == 200 and json.loads(body)["app"] == "Starlette"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: PKI):
    home = write_home(tmp_path_factory.mktemp("outer") / "home", pki)
    services = open_services(home)
    add_signer(services, pki, "Outer", AUTHTYPE="NOAUTH")
    services.close()
    server = ServerProcess(home, (), None).start()
    yield server
    server.stop()


def test_a_loopback_clients_forwarded_address_is_still_logged(server: ServerProcess, pki: PKI) -> None:
    url = f"https://127.0.0.1:{server.port}/signserver/rest/v1/workers/Outer/process"
    body = {"data": "aGVsbG8=", "encoding": "BASE64"}
    ids = []
    for extra in ({"X-Forwarded-For": "203.0.113.7"}, {}):
        # A new connection each: the caller's facts (the remote address) are kept per connection.
        with httpx.Client(verify=client_context(pki.ca_pem)) as client:
            response = client.post(url, json=body, headers=extra)
        assert response.status_code == 200, response.text
        ids.append(response.headers["x-request-id"])

    def remote(request_id: str) -> str | None:
        found = re.search(rf"request_id={re.escape(request_id)} .*remote=(\S+)", server.log())
        return found.group(1) if found else None

    wait_until(lambda: all(remote(i) for i in ids), what="the two worker log lines")
    assert [remote(i) for i in ids] == ["203.0.113.7", "127.0.0.1"]


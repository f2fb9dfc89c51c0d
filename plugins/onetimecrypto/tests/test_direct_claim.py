"""The RA claim route called directly by GuardMiddleware (signpeer_core/directroutes.py: a literal
path no route before it matches) answers exactly as it does through Starlette's exception
middleware and router, behind the peer guard: the same statuses, bodies and headers for claims,
answers, bad input, a caller without a certificate or without authorization, another method.

Two apps on the same services, driven in process over ASGI, the client certificate put where
the TLS layer puts it (the connection's ``tls`` extension), as in tests/test_direct_routes.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from signpeer_core.clientrules import ClientRule, serialize_rules
from signpeer_core.directroutes import DirectRoutes
from signpeer_core.testing import PKI, open_services, write_home
from signpeer_core.testing.directapps import asgi_request, assert_same_response, direct_and_general_apps

CLAIM = "/signserver/peer/v1/ra/claim"
RESULT = "/signserver/peer/v1/ra/requests/{}/result"


@pytest.fixture(scope="module")
def peers(pki: PKI) -> Any:
    return pki.issue_client("CA peer", dn_suffix=", O=signpeer CA"), pki.issue_client("Stranger")


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory, pki: PKI, peers: Any) -> Any:
    home = write_home(tmp_path_factory.mktemp("direct-claim") / "home", pki)
    services = open_services(home)
    services.store.update_global({"GLOB.PEERS_INCOMING_ENABLED": "true",
                                  "GLOB.WSPEERS": serialize_rules([ClientRule.for_certificate(peers[0].cert)])})
    services.close()
    services = open_services(home)  # the global configuration as a server starts with it
    yield direct_and_general_apps(services)
    services.close()


def test_the_claim_and_result_routes_are_direct(apps: Any) -> None:
    direct, _ = apps
    table = DirectRoutes(direct.routes)
    assert table.find({"method": "POST", "path": CLAIM}) is not None  # before: every peer route via the Router
    assert table.find({"method": "GET", "path": CLAIM}) is None  # the Router answers 405
    # A string parameter no earlier route can match (signpeer_core/directroutes.py).
    assert table.find({"method": "POST", "path": RESULT.format("r1")}) is not None
    assert table.find({"method": "POST", "path": RESULT.format("r1") + "/"}) is None  # the catch-all's
    assert table.find({"method": "POST", "path": CLAIM, "root_path": "/mounted"}) is None


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(("who", "method", "body", "status"), [
    ("peer", "POST", {"wait": 0}, 200),
    ("peer", "POST", {"wait": 0, "max": 5, "lease": 30, "queues": ["SomeCA"]}, 200),
    ("peer", "POST", {"wait": 0, "answers": [{"id": "no-such-request", "error": "refused"}]}, 200),  # its 404 inside
    ("peer", "POST", {"wait": 0, "answers": [{"id": "x"}]}, 200),  # no chain, no error: its 400 inside
    ("peer", "POST", {"max": 0}, 400),
    ("peer", "POST", {"queues": "SomeCA"}, 400),
    ("peer", "POST", {"answers": "nope"}, 400),
    ("peer", "POST", "{not json", 400),
    ("peer", "GET", None, 404),  # the catch-all of the peer root answers (the Router picks it)
    ("stranger", "POST", {"wait": 0}, 403),  # not a Peer System: 403 "Unauthorized"
    (None, "POST", {"wait": 0}, 401),  # no client certificate
])
def test_the_direct_claim_answers_as_the_router_does(apps: Any, peers: Any, who: str | None, method: str,
                                                     body: Any, status: int) -> None:
    cert = {"peer": peers[0].cert, "stranger": peers[1].cert, None: None}[who]
    content = body if isinstance(body, str) else (json.dumps(body) if body is not None else None)
    kwargs: dict[str, Any] = {"content": content, "headers": JSON} if content is not None else {}
    first, second = (asgi_request(app, method, CLAIM, cert, **kwargs) for app in apps)
    assert first.status_code == status, first.text
    assert_same_response(first, second, byte_for_byte=True)
    if status == 200:
        assert first.json()["requests"] == []


@pytest.mark.parametrize(("who", "request_id", "body", "status"), [
    ("peer", "no-such-request", {"error": "refused"}, 404),
    ("peer", "no-such-request", "{not json", 400),
    ("stranger", "no-such-request", {"error": "refused"}, 403),
    (None, "no-such-request", {"error": "refused"}, 401),
])
def test_the_direct_result_answers_as_the_router_does(apps: Any, peers: Any, who: str | None, request_id: str,
                                                      body: Any, status: int) -> None:
    cert = {"peer": peers[0].cert, "stranger": peers[1].cert, None: None}[who]
    content = body if isinstance(body, str) else json.dumps(body)
    first, second = (asgi_request(app, "POST", RESULT.format(request_id), cert, content=content, headers=JSON)
                     for app in apps)
    assert first.status_code == status, first.text
    assert_same_response(first, second, byte_for_byte=True)


def test_a_trailing_slash_goes_the_usual_way(apps: Any, peers: Any) -> None:
    first, second = (asgi_request(app, "POST", CLAIM + "/", peers[0].cert, content="{}", headers=JSON) for app in apps)
    assert_same_response(first, second, byte_for_byte=True)

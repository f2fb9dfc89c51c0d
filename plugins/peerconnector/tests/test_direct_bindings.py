"""The key binding operations called directly by GuardMiddleware (signpeer_core/directroutes.py:
paths with a string parameter that no route before them can match) answer exactly as they do
through Starlette's exception middleware and router, behind the peer guard: the same statuses,
bodies and headers for a binding, bad input, an unknown binding, a caller without a certificate
or without authorization, another method; and a renewal through them is a renewal.

Two apps on the same services, driven in process over ASGI, the client certificate put where the
TLS layer puts it (the connection's ``tls`` extension), as in plugins/onetimecrypto/tests/test_direct_claim.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography import x509

from signpeer_core import devpki
from signpeer_core.clientrules import ClientRule, serialize_rules
from signpeer_core.directroutes import DirectRoutes
from signpeer_core.issuing import IssuingCA
from signpeer_core.testing import PKI, add_signer, open_services, write_home
from signpeer_core.testing.directapps import asgi_request, assert_same_response, direct_and_general_apps

BINDING = "/signserver/peer/v1/keybindings/{}"
OPERATIONS = [("GET", ""), ("POST", "/nextkey"), ("POST", "/csr"), ("POST", "/certificate"), ("PUT", "/certificate"),
              ("POST", "/status"), ("PUT", "/status")]


@pytest.fixture(scope="module")
def peers(pki: PKI) -> Any:
    return pki.issue_client("CA peer", dn_suffix=", O=signpeer CA"), pki.issue_client("Stranger")


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory, pki: PKI, peers: Any) -> Any:
    home = write_home(tmp_path_factory.mktemp("direct-bindings") / "home", pki)
    services = open_services(home)
    services.store.update_global({"GLOB.PEERS_INCOMING_ENABLED": "true",
                                  "GLOB.WSPEERS": serialize_rules([ClientRule.for_certificate(peers[0].cert)])})
    for name in ("Renewed", "Compared"):
        add_signer(services, pki, name, PEERS_VISIBLE="true", KEYALG="ECDSA", KEYSPEC="secp256r1")
    services.close()
    services = open_services(home)  # the configuration as a server starts with it
    yield direct_and_general_apps(services)
    services.close()


def test_the_binding_operations_are_direct(apps: Any) -> None:
    direct, _ = apps
    table = DirectRoutes(direct.routes)
    for method, operation in OPERATIONS:  # before: every binding operation via the Router
        assert table.find({"method": method, "path": BINDING.format("Signer") + operation}) is not None
    assert table.find({"method": "GET", "path": BINDING.format("Signer") + "/nextkey"}) is None  # the catch-all's
    assert table.find({"method": "POST", "path": BINDING.format("Signer") + "/csr/"}) is None  # the catch-all's
    assert table.find({"method": "POST", "path": BINDING.format("a/b") + "/csr"}) is None  # the catch-all's 404
    assert table.find({"method": "GET", "path": BINDING.format("Signer"), "root_path": "/mounted"}) is None


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(("who", "method", "path", "body", "status"), [
    ("peer", "GET", BINDING.format("Compared"), None, 200),
    ("peer", "GET", BINDING.format("NoSuchWorker"), None, 404),
    ("peer", "POST", BINDING.format("NoSuchWorker") + "/nextkey", {}, 404),
    ("peer", "POST", BINDING.format("Compared") + "/nextkey", "{not json", 400),
    ("peer", "POST", BINDING.format("Compared") + "/nextkey", {"replace": "yes"}, 400),
    ("peer", "POST", BINDING.format("NoSuchWorker") + "/csr", None, 404),
    ("peer", "POST", BINDING.format("Compared") + "/certificate", {}, 400),
    ("peer", "PUT", BINDING.format("Compared") + "/certificate", {"certificateChain": [1]}, 400),
    ("peer", "PUT", BINDING.format("Compared") + "/certificate", {"certificateChain": "not a PEM"}, 400),
    ("peer", "POST", BINDING.format("Compared") + "/status", {"status": "SLEEPING"}, 400),
    ("peer", "GET", BINDING.format("Compared") + "/nextkey", None, 404),  # another method: the catch-all answers
    ("peer", "POST", BINDING.format("Compared") + "/csr/", None, 404),  # a trailing slash: the catch-all's
    ("peer", "POST", BINDING.format("a/b") + "/csr", None, 404),  # the catch-all of the peer root answers
    ("stranger", "GET", BINDING.format("Compared"), None, 403),  # not a Peer System: 403 "Unauthorized"
    ("stranger", "POST", BINDING.format("Compared") + "/nextkey", {}, 403),
    (None, "POST", BINDING.format("Compared") + "/csr", None, 401),  # no client certificate
])
def test_the_direct_operations_answer_as_the_router_does(apps: Any, peers: Any, who: str | None, method: str,
                                                         path: str, body: Any, status: int) -> None:
    cert = {"peer": peers[0].cert, "stranger": peers[1].cert, None: None}[who]
    content = body if isinstance(body, str) else (json.dumps(body) if body is not None else None)
    kwargs: dict[str, Any] = {"content": content, "headers": JSON} if content is not None else {}
    first, second = (asgi_request(app, method, path, cert, **kwargs) for app in apps)
    assert first.status_code == status, first.text
    assert_same_response(first, second, byte_for_byte=True)


def test_a_renewal_through_the_direct_routes(apps: Any, peers: Any) -> None:
    direct, general = apps
    cert = peers[0].cert
    path = BINDING.format("Renewed")
    created = asgi_request(direct, "POST", path + "/nextkey", cert, content="{}", headers=JSON)
    assert created.status_code == 201, created.text
    again = [asgi_request(app, "POST", path + "/nextkey", cert, content="{}", headers=JSON) for app in apps]
    assert_same_response(again[0], again[1], byte_for_byte=True)  # the pending key, as both routes give it
    assert again[0].status_code == 200 and again[0].json()["nextKeyPairAlias"] == created.json()["nextKeyPairAlias"]
    answer = asgi_request(direct, "POST", path + "/csr", cert)
    assert answer.status_code == 200 and answer.json()["forNextKey"], answer.text
    csr = x509.load_pem_x509_csr(answer.json()["csr"].encode())
    chain = devpki.cert_pem(*IssuingCA(*devpki.make_ca("CN=Direct Issuing CA")).issue(csr))
    installed = asgi_request(direct, "PUT", path + "/certificate", cert, content=chain,
                             headers={"Content-Type": "application/pem-certificate-chain"})
    assert installed.status_code == 200, installed.text
    assert installed.json()["promoted"] and installed.json()["keyPairAlias"] == created.json()["nextKeyPairAlias"]
    views = [asgi_request(app, "GET", path, cert) for app in apps]
    assert_same_response(views[0], views[1], byte_for_byte=True)
    assert views[0].json()["keyPairAlias"] == created.json()["nextKeyPairAlias"]
    assert views[0].json()["operationalStatus"] == "ONLINE"

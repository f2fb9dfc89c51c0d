"""mtls.py against real uvicorn: the identity the app sees is the certificate the client presented.

uvicorn gives apps no TLS information by itself; these tests guard the protocol subclasses
(uvicorn internals) for both HTTP implementations and both event loops.
"""

from __future__ import annotations

import socket
import ssl
import threading

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from signpeer_core.keys import format_dn
from signpeer_core.mtls import MTLSH11Protocol, MTLSHttpToolsProtocol, client_certificate
from signpeer_core.testing import PKI, client_context, wait_until

parsed: list[object] = []


async def whoami(request: Request) -> JSONResponse:
    cert = client_certificate(request.scope)
    parsed.append(cert)
    tls = request.scope.get("extensions", {}).get("tls")
    return JSONResponse({"subject": format_dn(cert.subject) if cert else None,
                         "serial": format(cert.serial_number, "x") if cert else None,
                         "tls_version": tls and tls["tls_version"],
                         "chain": len(tls["client_cert_chain"]) if tls else None})


app = Starlette(routes=[Route("/whoami", whoami)])


@pytest.fixture(params=[("httptools", "uvloop"), ("h11", "asyncio")], ids=lambda p: "-".join(p))
def server(request, pki: PKI):
    http_name, loop = request.param
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, http=MTLSHttpToolsProtocol if http_name == "httptools" else MTLSH11Protocol,
                            loop=loop, ssl_certfile=str(pki.server.pem), ssl_keyfile=str(pki.server.key_pem),
                            ssl_cert_reqs=ssl.CERT_OPTIONAL, ssl_ca_certs=str(pki.ca_pem), log_level="warning",
                            lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: srv.started, what="uvicorn to start")
    yield f"https://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)
    sock.close()


def test_app_sees_the_presented_certificate(server: str, pki: PKI) -> None:
    with httpx.Client(verify=client_context(pki.ca_pem, pki.client.pair)) as c:
        answer = c.get(server + "/whoami").json()
    assert answer["subject"] == format_dn(pki.client.cert.subject) == "CN=client1, OU=builds, O=signpeer tests"
    assert answer["serial"] == format(pki.client.cert.serial_number, "x")
    assert answer["tls_version"] in (0x0303, 0x0304)
    assert answer["chain"] == 1
    with httpx.Client(verify=client_context(pki.ca_pem, pki.admin.pair)) as c:
        assert c.get(server + "/whoami").json()["subject"] == "CN=admin, O=signpeer tests"


def test_no_certificate_no_identity(server: str, pki: PKI) -> None:
    with httpx.Client(verify=client_context(pki.ca_pem)) as c:
        answer = c.get(server + "/whoami").json()
    assert answer["subject"] is None and answer["chain"] == 0


def test_certificate_parsed_once_per_connection(server: str, pki: PKI) -> None:
    parsed.clear()
    with httpx.Client(verify=client_context(pki.ca_pem, pki.client.pair)) as c:
        for _ in range(5):
            c.get(server + "/whoami")
    assert len(parsed) == 5
    assert all(p is parsed[0] for p in parsed)  # same object: cached on the connection

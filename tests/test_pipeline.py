"""A plugin route that calls the pipeline gets AUTHTYPE, readiness and the worker log for free.

The route is the example of docs/writing-plugins.md ("A route that signs: call the pipeline"),
registered as a plugin next to the installed ones; it does nothing about authorization itself.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from signpeer_core.app import create_app
from signpeer_core.auth import (
    AUTHORIZED_CLIENTS_PROPERTY,
    AuthorizedClient,
    hash_password,
    serialize_authorized_clients,
)
from signpeer_core.plugins import Registry, get_plugin_manager
from signpeer_core.services import Services
from signpeer_core.settings import load_settings
from signpeer_core.testing import PKI, add_signer, write_home

DOCS = Path(__file__).resolve().parents[1] / "docs"
SECTION = "## A route that signs: call the pipeline"


def example_plugin() -> types.ModuleType:
    text = (DOCS / "writing-plugins.md").read_text()
    section = text.split(SECTION, 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert code is not None, "the section has no python example"
    module = types.ModuleType("doc_route_example")
    exec(compile(code.group(1), "writing-plugins.md route example", "exec"), module.__dict__)
    return module


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def worker_log() -> Iterator[Lines]:
    logger = logging.getLogger("signpeer.worker")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def services(tmp_path: Path, pki: PKI) -> Iterator[Services]:
    pm = get_plugin_manager()
    pm.register(example_plugin(), name="doc_route_example")
    home = write_home(tmp_path / "home", pki)
    svc = Services.open(load_settings(home), registry=Registry(pm))
    try:
        add_signer(svc, pki, "Open", AUTHTYPE="NOAUTH")
        rule = AuthorizedClient.for_certificate(pki.client.cert, "SUBJECT_RDN_CN")
        add_signer(svc, pki, "CertOnly", AUTHTYPE="CLIENTCERT",
                   **{AUTHORIZED_CLIENTS_PROPERTY: serialize_authorized_clients([rule])})
        add_signer(svc, pki, "UserOnly", AUTHTYPE="USERNAME", **{"USER.ALICE": hash_password("right")})
        add_signer(svc, pki, "Off", DISABLED="true", AUTHTYPE="NOAUTH")
        yield svc
    finally:
        svc.close()


class client_for:
    """The app as the TLS layer hands it requests: with ``cert`` as the verified client certificate."""

    def __init__(self, services: Services, cert: x509.Certificate | None) -> None:
        app = create_app(services)

        async def with_tls(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if cert is not None:
                scope.setdefault("extensions", {})["tls"] = {"client_cert_der": cert.public_bytes(Encoding.DER)}
            await app(scope, receive, send)

        self.app = with_tls

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        async def run() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="https://signpeer.test") as client:
                return await client.post(path, **kwargs)

        return asyncio.run(run())


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def verifies(services: Services, worker: str, data: bytes, signature: bytes) -> bool:
    public = services.runtime.get(worker).chain[0].public_key()  # type: ignore[attr-defined]
    try:
        public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def test_noauth_worker_signs_for_anybody(services: Services, worker_log: Lines) -> None:
    client = client_for(services, None)
    r = client.post("/example/v1/sign/Open", content=b"payload", headers=basic("mallory", "x"))
    assert r.status_code == 200, r.text
    assert verifies(services, "Open", b"payload", r.content)
    line = next(line for line in worker_log.lines if r.headers["X-Request-Id"] in line)
    # NOAUTH checked no user name: it is not taken as the client's identity.
    assert "worker=Open" in line and "outcome=SUCCESS" in line and "client='-'" in line and "mallory" not in line


def test_clientcert_worker_refuses_unknown_clients(services: Services, pki: PKI, worker_log: Lines) -> None:
    r = client_for(services, None).post("/example/v1/sign/CertOnly", content=b"x")
    assert r.status_code == 401 and "requires a TLS client certificate" in r.json()["error"]
    stranger = pki.issue_client("stranger")
    r = client_for(services, stranger.cert).post("/example/v1/sign/CertOnly", content=b"x")
    assert r.status_code == 403 and "is not authorized for worker 'CertOnly'" in r.json()["error"]
    r = client_for(services, pki.client.cert).post("/example/v1/sign/CertOnly", content=b"known")
    assert r.status_code == 200, r.text
    assert verifies(services, "CertOnly", b"known", r.content)
    outcomes = [re.search(r"outcome=(FAILED \d+|SUCCESS)", line).group(1)  # type: ignore[union-attr]
                for line in worker_log.lines if "worker=CertOnly" in line]
    assert outcomes == ["FAILED 401", "FAILED 403", "SUCCESS"]
    assert "client='cert:CN=stranger" in next(line for line in worker_log.lines if "FAILED 403" in line)


def test_username_worker_refuses_bad_credentials(services: Services, worker_log: Lines) -> None:
    client = client_for(services, None)
    r = client.post("/example/v1/sign/UserOnly", content=b"x")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    r = client.post("/example/v1/sign/UserOnly", content=b"x", headers=basic("alice", "wrong"))
    assert r.status_code == 403 and "wrong password" in r.json()["error"]
    r = client.post("/example/v1/sign/UserOnly", content=b"x", headers=basic("alice", "right"))
    assert r.status_code == 200, r.text
    success = next(line for line in worker_log.lines if "worker=UserOnly" in line and "SUCCESS" in line)
    assert "client='user:alice'" in success


def test_disabled_and_unknown_workers_are_refused(services: Services, worker_log: Lines) -> None:
    client = client_for(services, None)
    r = client.post("/example/v1/sign/Off", content=b"x")
    assert r.status_code == 503 and "DISABLED=true" in r.json()["error"]
    r = client.post("/example/v1/sign/Nobody", content=b"x")
    assert r.status_code == 404
    assert any("worker=Nobody" in line and "FAILED 404" in line for line in worker_log.lines)


def test_a_status_read_does_not_ask_a_blocking_token(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """offline_reasons() of a signer on a blocking token (an HSM) answers from memory."""
    worker = services.runtime.get("Open")
    token = worker.token
    assert token is not None

    def no_device(*args: Any) -> Any:
        raise AssertionError("a status read called into the token")

    monkeypatch.setattr(token, "blocking", True)
    for name in ("private_key", "public_key", "certificate_chain", "key_aliases"):
        monkeypatch.setattr(token, name, no_device)
    assert worker.offline_reasons() == [] and worker.status().active
    assert services.runtime.get("Off").offline_reasons() == ["worker is disabled (DISABLED=true)"]

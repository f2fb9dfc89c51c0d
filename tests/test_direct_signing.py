"""The direct signing path (signpeer_core/directsigning.py) answers, logs and counts exactly as the
pipeline does.

The app is called in process, as the server calls it per request (its ASGI interface, the real
routes, the test kit's memory token with a real P-256 key). The same request to the same NOAUTH
worker goes the direct way without an ``Authorization`` header and the pipeline's way with one
(a NOAUTH worker ignores it); every answer is compared between the two: status, headers, body, the
worker log line and the request counts. A spy on ``Pipeline.process`` shows which way each took.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from signpeer_core.app import create_app
from signpeer_core.testing import PASSWORD, PKI, add_signer, open_services, write_home

PROCESS = "/signserver/rest/v1/workers/{}/process"
BASIC = b"Basic " + base64.b64encode(b"someone:secret")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, pki: PKI):
    home = write_home(tmp_path_factory.mktemp("direct") / "home", pki)
    services = open_services(home)
    add_signer(services, pki, "Direct", keyalg="ECDSA", keyspec="secp256r1", AUTHTYPE="NOAUTH")
    add_signer(services, pki, "Checked", keyalg="ECDSA", keyspec="secp256r1", AUTHTYPE="CLIENTCERT")
    app = create_app(services)
    calls: list[str] = []
    pipeline = services.pipeline
    general = pipeline.process

    async def spy(worker: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(worker))
        return await general(worker, *args, **kwargs)

    pipeline.process = spy  # counts which requests went the pipeline's way; it still does all the work
    yield services, app, calls
    services.close()


def _call(app: Any, worker: str, body: bytes, authorization: bytes | None = None) -> tuple[int, dict[bytes, bytes], bytes]:
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if authorization is not None:
        headers.append((b"authorization", authorization))
    path = PROCESS.format(worker)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "https",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8443), "state": {}}
    sent: list[dict[str, Any]] = []
    pieces = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return pieces.pop(0) if pieces else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    head = sent[0]
    assert set(head) == {"type", "status", "headers"}, head  # nothing of ours left in the message
    return head["status"], dict(head["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def _both(served: Any, caplog: pytest.LogCaptureFixture, worker: str, body: bytes) -> list[tuple[Any, ...]]:
    """The request sent the direct way and the pipeline's way: [(status, headers, body, log line, way)]."""
    services, app, calls = served
    out = []
    for authorization in (None, BASIC):
        caplog.clear()
        before = len(calls)
        with caplog.at_level(logging.INFO, logger="signpeer.worker"):
            status, headers, answer = _call(app, worker, body, authorization)
        lines = [r.getMessage() for r in caplog.records if r.name == "signpeer.worker"]
        assert len(lines) == 1, lines
        out.append((status, headers, answer, lines[0], "pipeline" if len(calls) > before else "direct"))
    return out


def _same_line(direct: str, general: str, request_ids: tuple[str, str]) -> None:
    def norm(line: str, request_id: str) -> str:
        assert f"request_id={request_id} " in line
        # The pipeline's way carries a Basic user name, which the line of a refusal names as sent.
        line = line.replace("client='user:someone'", "client='-'")
        return re.sub(r"duration_ms=[0-9.]+", "duration_ms=D", line.replace(request_id, "ID"))

    assert norm(direct, request_ids[0]) == norm(general, request_ids[1])


def test_a_signature_the_direct_way_is_the_pipelines_answer(served: Any, caplog: pytest.LogCaptureFixture) -> None:
    services = served[0]
    document = os.urandom(1024)
    body = json.dumps({"data": base64.b64encode(document).decode(), "encoding": "BASE64"}).encode()
    services.metrics.flush()
    before = services.metrics.totals().get("success", 0)
    (status1, head1, body1, line1, way1), (status2, head2, body2, line2, way2) = _both(served, caplog, "Direct", body)
    assert (way1, way2) == ("direct", "pipeline")
    assert status1 == status2 == 200
    ids = (head1.pop(b"x-request-id").decode(), head2.pop(b"x-request-id").decode())
    assert ids[0] != ids[1]
    answers = [json.loads(body1), json.loads(body2)]
    for answer, request_id, head in zip(answers, ids, (head1, head2), strict=True):
        assert answer["requestId"] == answer["archiveId"] == request_id
        assert int(head.pop(b"content-length")) == len(body1 if head is head1 else body2)
        cert = x509.load_der_x509_certificate(base64.b64decode(answer.pop("signerCertificate")))
        public = cert.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(base64.b64decode(answer.pop("data")), document, ec.ECDSA(hashes.SHA256()))  # raises if bad
        del answer["requestId"], answer["archiveId"]
    assert answers[0] == answers[1] == {"metaData": {}}
    assert head1 == head2
    assert list(json.loads(body1)) == list(json.loads(body2))  # the members in the same order
    assert "outcome=SUCCESS" in line1
    _same_line(line1, line2, ids)
    services.metrics.flush()
    assert services.metrics.totals().get("success", 0) == before + 2


@pytest.mark.parametrize("worker, body", [
    ("Direct", b'{"data": "not base64!", "encoding": "BASE64"}'),
    ("Direct", b'{"data": "aGVsbG8=", "encoding": "BASE64", "metaData": {"NOSUCHOPTION": "1"}}'),
    ("Direct", b'{"data": "aGVsbG8=", "encoding": "base64"}'),
    ("Direct", b'{"data": "hello"}'),
    ("Direct", b''),
    ("Direct", b'[1, 2]'),
    ("Direct", b'{"data": 1, "encoding": "BASE64"}'),
    ("NoSuchWorker", b'{"data": "aGVsbG8=", "encoding": "BASE64"}'),
    ("Checked", b'{"data": "aGVsbG8=", "encoding": "BASE64"}'),
])
def test_every_other_request_gets_the_pipelines_answer(served: Any, caplog: pytest.LogCaptureFixture, worker: str,
                                                       body: bytes) -> None:
    (status1, head1, body1, line1, _), (status2, head2, body2, line2, _) = _both(served, caplog, worker, body)
    ids = (head1.pop(b"x-request-id").decode(), head2.pop(b"x-request-id").decode())
    assert status1 == status2
    if status1 == 200:  # a signature: compare the answers without their random parts
        answers = [json.loads(b) for b in (body1, body2)]
        for answer in answers:
            del answer["data"], answer["requestId"], answer["archiveId"]
        assert answers[0] == answers[1]
        head1.pop(b"content-length"), head2.pop(b"content-length")
    else:
        assert body1 == body2, (body1, body2)
    assert head1 == head2
    _same_line(line1, line2, ids)


def test_a_deactivated_token_is_refused_as_before_and_signs_again_once_activated(
        served: Any, caplog: pytest.LogCaptureFixture) -> None:
    services = served[0]
    token = services.runtime.get("Direct").token
    body = json.dumps({"data": base64.b64encode(b"x").decode(), "encoding": "BASE64"}).encode()
    token.deactivate()
    try:
        (status1, _, body1, line1, way1), (status2, _, body2, line2, _) = _both(served, caplog, "Direct", body)
        assert way1 == "pipeline"  # not ready: the pipeline says why
        assert status1 == status2 == 503 and body1 == body2 and b"not activated" in body1
        assert "FAILED 503" in line1 and "FAILED 503" in line2
    finally:
        token.activate(PASSWORD)
    (status1, _, _, _, way1), _ = _both(served, caplog, "Direct", body)
    assert (status1, way1) == (200, "direct")


def test_a_signer_with_its_own_readiness_check_is_never_signed_the_direct_way(served: Any) -> None:
    # Its check_ready is the pipeline's to call: ready_prepared() declines (decided once per worker).
    from signpeer_core.signers import PlainSigner

    services, _app, _calls = served
    worker = services.runtime.get("Direct")
    assert worker.ready_prepared() is not None

    class Checked(PlainSigner):
        def check_ready(self) -> None:
            super().check_ready()

    own = Checked(worker.config, services)
    own.load(services.runtime)
    assert own._prepared is not None  # it has a prepared signer, the process() hot path takes it
    assert own.ready_prepared() is None

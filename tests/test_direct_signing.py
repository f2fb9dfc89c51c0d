"""The direct signing path (signpeer_core/directsigning.py) answers, logs and counts exactly as the
pipeline does.

The app is called in process, as the server calls it per request (its ASGI interface, the real
routes, the test kit's memory token with a real P-256 key; a client certificate where the TLS
layer puts it, the connection's ``tls`` extension). The same request to the same worker goes the
direct way as the server sends it and the pipeline's way with the direct path switched off
(:meth:`DirectSigning.find` answering None, as it does for any request it does not take); every
answer is compared between the two: status, headers, body, the worker log line and the request
counts. A spy on ``Pipeline.process`` shows which way each took.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from signpeer_core.app import create_app
from signpeer_core.auth import AuthorizedClient, serialize_authorized_clients
from signpeer_core.directsigning import DirectSigning
from signpeer_core.errors import SignpeerError
from signpeer_core.metrics import status_outcome
from signpeer_core.testing import PASSWORD, PKI, add_signer, open_services, write_home
from signpeer_core.workermetrics import UNKNOWN_WORKER

PROCESS = "/signserver/rest/v1/workers/{}/process"
BASIC = b"Basic " + base64.b64encode(b"someone:secret")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, pki: PKI):
    home = write_home(tmp_path_factory.mktemp("direct") / "home", pki)
    services = open_services(home)
    add_signer(services, pki, "Direct", keyalg="ECDSA", keyspec="secp256r1", AUTHTYPE="NOAUTH")
    add_signer(services, pki, "Checked", keyalg="ECDSA", keyspec="secp256r1", AUTHTYPE="CLIENTCERT")
    # AUTHTYPE not set: CLIENTCERT, the default. Its one rule accepts pki.client (CN=client1).
    add_signer(services, pki, "Certified", keyalg="ECDSA", keyspec="secp256r1",
               AUTHORIZED_CLIENTS=_rules(pki.client.cert))
    add_signer(services, pki, "Bound", keyalg="ECDSA", keyspec="secp256r1", AUTHTYPE="CLIENTCERT",
               AUTHORIZED_CLIENTS=_rules(pki.client.cert, issuer_key_id="00" * 20))  # another CA's key
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


def _rules(*certs: x509.Certificate, issuer_key_id: str = "") -> str:
    """AUTHORIZED_CLIENTS accepting ``certs`` by CN (bound to the client CA key ``issuer_key_id``)."""
    return serialize_authorized_clients([replace(AuthorizedClient.for_certificate(cert, "SUBJECT_RDN_CN"),
                                                 issuerKeyId=issuer_key_id) for cert in certs])


def connection(cert: x509.Certificate | None) -> dict[str, Any]:
    """A TLS connection's ``tls`` extension as the server fills it (mtls.py): with or without a
    client certificate. The REST API keeps its per-connection facts in it; pass the same one to
    several requests for a kept-alive connection."""
    if cert is None:
        return {"client_cert_chain": [], "client_cert_der": None}
    return {"client_cert_chain": [cert.public_bytes(Encoding.PEM).decode()],
            "client_cert_der": cert.public_bytes(Encoding.DER)}


@contextmanager
def _general_way() -> Iterator[None]:
    """The direct path switched off: every request goes to the pipeline, as when find() declines."""
    find = DirectSigning.find
    DirectSigning.find = lambda self, id_or_name, caller: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        DirectSigning.find = find  # type: ignore[method-assign]


def _call(app: Any, worker: str, body: bytes, authorization: bytes | None = None,
          tls: dict[str, Any] | None = None) -> tuple[int, dict[bytes, bytes], bytes]:
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if authorization is not None:
        headers.append((b"authorization", authorization))
    path = PROCESS.format(worker)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "https",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8443), "state": {}}
    if tls is not None:
        scope["extensions"] = {"tls": tls}
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


def _sent(served: Any, caplog: pytest.LogCaptureFixture, worker: str, body: bytes,
          tls: dict[str, Any] | None = None, authorization: bytes | None = None) -> tuple[Any, ...]:
    """The request sent once: (status, headers, body, log line, way, counts of the worker by outcome)."""
    services, app, calls = served
    caplog.clear()
    try:
        label = services.runtime.get(worker).name
    except SignpeerError:
        label = UNKNOWN_WORKER
    before, counted = len(calls), _counts(services, label)
    with caplog.at_level(logging.INFO, logger="signpeer.worker"):
        status, headers, answer = _call(app, worker, body, authorization, tls)
    lines = [r.getMessage() for r in caplog.records if r.name == "signpeer.worker"]
    assert len(lines) == 1, lines
    after = _counts(services, label)
    added = {outcome: after[outcome] - counted.get(outcome, 0) for outcome in after if after[outcome] != counted.get(outcome)}
    return status, headers, answer, lines[0], "pipeline" if len(calls) > before else "direct", added


def _both(served: Any, caplog: pytest.LogCaptureFixture, worker: str, body: bytes,
          cert: x509.Certificate | None = None) -> list[tuple[Any, ...]]:
    """The request sent as the server sends it and the pipeline's way, each on a new connection
    (with ``cert`` as its client certificate): [(status, headers, body, log line, way, counts)].
    Both ways count the same."""
    out = [_sent(served, caplog, worker, body, connection(cert))]
    with _general_way():
        out.append(_sent(served, caplog, worker, body, connection(cert)))
    assert out[0][5] == out[1][5] and sum(out[0][5].values()) == 1, (out[0][5], out[1][5])
    return out


def _counts(services: Any, worker: str) -> dict[str, float]:
    """The request counter of ``worker`` by outcome (signpeer_signing_requests)."""
    services.metrics.flush()
    return {sample.labels["outcome"]: sample.value for family in services.metrics.requests.collect()
            for sample in family.samples
            if sample.name.endswith("_total") and sample.labels.get("worker") == worker}


def _same_line(direct: str, general: str, request_ids: tuple[str, str]) -> None:
    def norm(line: str, request_id: str) -> str:
        assert f"request_id={request_id} " in line
        return re.sub(r"duration_ms=[0-9.]+", "duration_ms=D", line.replace(request_id, "ID"))

    assert norm(direct, request_ids[0]) == norm(general, request_ids[1])


def test_a_signature_the_direct_way_is_the_pipelines_answer(served: Any, caplog: pytest.LogCaptureFixture) -> None:
    services = served[0]
    document = os.urandom(1024)
    body = json.dumps({"data": base64.b64encode(document).decode(), "encoding": "BASE64"}).encode()
    services.metrics.flush()
    before = services.metrics.totals().get("success", 0)
    (status1, head1, body1, line1, way1, _), (status2, head2, body2, line2, way2, _) = _both(served, caplog, "Direct",
                                                                                           body)
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


def _compare(first: tuple[Any, ...], second: tuple[Any, ...]) -> None:
    """Two answers to the same request are the same (signatures and ids aside), log lines too."""
    (status1, head1, body1, line1, *_), (status2, head2, body2, line2, *_) = first, second
    ids = (head1.pop(b"x-request-id").decode(), head2.pop(b"x-request-id").decode())
    assert status1 == status2
    if status1 == 200:
        answers = [json.loads(b) for b in (body1, body2)]
        for answer, request_id in zip(answers, ids, strict=True):
            assert answer.pop("requestId") == answer.pop("archiveId") == request_id
            del answer["data"]
        assert answers[0] == answers[1]
        assert list(json.loads(body1)) == list(json.loads(body2))
        head1.pop(b"content-length"), head2.pop(b"content-length")
    else:
        assert body1 == body2, (body1, body2)
    assert head1 == head2
    _same_line(line1, line2, ids)


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
    _compare(*_both(served, caplog, worker, body))


def test_a_deactivated_token_is_refused_as_before_and_signs_again_once_activated(
        served: Any, caplog: pytest.LogCaptureFixture) -> None:
    services = served[0]
    token = services.runtime.get("Direct").token
    body = json.dumps({"data": base64.b64encode(b"x").decode(), "encoding": "BASE64"}).encode()
    token.deactivate()
    try:
        (status1, _, body1, line1, way1, _), (status2, _, body2, line2, *_) = _both(served, caplog, "Direct", body)
        assert way1 == "pipeline"  # not ready: the pipeline says why
        assert status1 == status2 == 503 and body1 == body2 and b"not activated" in body1
        assert "FAILED 503" in line1 and "FAILED 503" in line2
    finally:
        token.activate(PASSWORD)
    (status1, _, _, _, way1, _), _ = _both(served, caplog, "Direct", body)
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


# -- CLIENTCERT: the worker's rules decide from memory, a refusal is the pipeline's --------------------

SIGN = json.dumps({"data": base64.b64encode(b"document").decode(), "encoding": "BASE64"}).encode()
CLIENT1 = "client='cert:CN=client1, OU=builds, O=signpeer tests'"


def test_an_authorized_client_certificate_signs_the_direct_way_with_the_pipelines_answer(
        served: Any, pki: PKI, caplog: pytest.LogCaptureFixture) -> None:
    document = os.urandom(1024)
    body = json.dumps({"data": base64.b64encode(document).decode(), "encoding": "BASE64"}).encode()
    direct, general = _both(served, caplog, "Certified", body, pki.client.cert)  # AUTHTYPE: the default
    assert (direct[4], general[4]) == ("direct", "pipeline")
    assert direct[0] == 200 and direct[5] == general[5] == {"success": 1}
    signature = base64.b64decode(json.loads(direct[2])["data"])
    public = served[0].runtime.get("Certified").chain[0].public_key()
    public.verify(signature, document, ec.ECDSA(hashes.SHA256()))  # raises if bad
    assert CLIENT1 in direct[3] and "outcome=SUCCESS" in direct[3]  # the certificate's subject, as the pipeline's
    _compare(direct, general)


@pytest.mark.parametrize("worker, cert, status, says", [
    ("Certified", None, 401, "requires a TLS client certificate"),  # no certificate on the connection
    ("Certified", "admin", 403, "is not authorized for worker 'Certified'"),  # not in the rules
    ("Bound", "client", 403, "is not authorized for worker 'Bound'"),  # its rule names another CA's key
    ("Checked", "client", 403, "has no authorized clients"),  # no rules at all
])
def test_a_refused_client_certificate_gets_the_pipelines_refusal(served: Any, pki: PKI, caplog: pytest.LogCaptureFixture,
                                                                 worker: str, cert: str | None, status: int,
                                                                 says: str) -> None:
    certificate = {"client": pki.client.cert, "admin": pki.admin.cert}.get(cert or "")
    first, second = _both(served, caplog, worker, SIGN, certificate)
    assert (first[4], second[4]) == ("pipeline", "pipeline")
    assert first[0] == status and says in json.loads(first[2])["error"]
    assert f"FAILED {status}" in first[3] and first[5] == second[5] == {status_outcome(status): 1}
    _compare(first, second)


@pytest.mark.parametrize("worker, body, authorization, status", [
    ("Certified", SIGN, BASIC, 200),  # an Authorization header: the pipeline reads (and here ignores) it
    ("Direct", SIGN, BASIC, 200),
    ("Certified", b'{"data": "aGVsbG8=", "encoding": "BASE64", "metaData": {"NOSUCHOPTION": "1"}}', None, 200),
    ("Certified", b'{"data": "not base64!", "encoding": "BASE64"}', None, 400),
])
def test_a_request_the_direct_path_does_not_take_from_an_authorized_client(
        served: Any, pki: PKI, caplog: pytest.LogCaptureFixture, worker: str, body: bytes,
        authorization: bytes | None, status: int) -> None:
    sent = _sent(served, caplog, worker, body, connection(pki.client.cert), authorization)
    with _general_way():
        general = _sent(served, caplog, worker, body, connection(pki.client.cert), authorization)
    assert (sent[0], sent[4], general[4]) == (status, "pipeline", "pipeline")
    assert CLIENT1 in sent[3]  # CLIENTCERT and NOAUTH pass no user name on: the certificate names the client
    assert sent[5] == general[5]
    _compare(sent, general)


def test_a_kept_alive_connection_follows_the_rules_a_reload_changed(served: Any, pki: PKI,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    services = served[0]
    wid = add_signer(services, pki, "Reloaded", keyalg="ECDSA", keyspec="secp256r1",
                     AUTHORIZED_CLIENTS=_rules(pki.client.cert))
    kept = connection(pki.client.cert)  # one connection's extension: its identity is decided once per authorizer
    for _ in range(2):
        assert _sent(served, caplog, "Reloaded", SIGN, kept)[::4][:2] == (200, "direct")

    def set_rules(rules: str) -> None:
        services.store.update_worker(wid, {"AUTHORIZED_CLIENTS": rules})
        services.runtime.reload_workers([wid])

    set_rules(_rules(pki.admin.cert))  # the client taken out
    refused = _sent(served, caplog, "Reloaded", SIGN, kept)
    assert (refused[0], refused[4]) == (403, "pipeline") and "not authorized" in json.loads(refused[2])["error"]
    with _general_way():
        _compare(refused, _sent(served, caplog, "Reloaded", SIGN, kept))
    assert _sent(served, caplog, "Reloaded", SIGN, connection(pki.admin.cert))[::4][:2] == (200, "direct")

    set_rules(_rules(pki.admin.cert, pki.client.cert))  # and put back
    signed = _sent(served, caplog, "Reloaded", SIGN, kept)
    assert (signed[0], signed[4]) == (200, "direct") and CLIENT1 in signed[3]


def test_a_subclass_of_the_client_certificate_authorizer_goes_the_pipelines_way(
        served: Any, pki: PKI, caplog: pytest.LogCaptureFixture) -> None:
    # A plugin's authorizer may check more than the rules: only the built-in class is decided directly.
    from signpeer_core.auth import ClientCertAuthorizer

    class Stricter(ClientCertAuthorizer):
        pass

    worker = served[0].runtime.get("Certified")
    built_in = worker.authorizer
    worker.authorizer = Stricter(worker.config)
    try:
        sent = _sent(served, caplog, "Certified", SIGN, connection(pki.client.cert))
    finally:
        worker.authorizer = built_in
    assert (sent[0], sent[4]) == (200, "pipeline") and CLIENT1 in sent[3]
    assert _sent(served, caplog, "Certified", SIGN, connection(pki.client.cert))[::4][:2] == (200, "direct")


def test_the_pipeline_matches_an_authorized_certificate_once_per_connection(
        served: Any, pki: PKI, caplog: pytest.LogCaptureFixture) -> None:
    # A request the direct path does not take (here: an Authorization header) from an authorized
    # client goes through the pipeline, which takes the authorizer's remembered decision
    # (ClientCertAuthorizer.accepts) too: the rules are matched once per connection identity. The
    # worker gets the request as before: the certificate, its CA key id, the address, no user name.
    worker = served[0].runtime.get("Certified")
    authorizer = worker.authorizer
    matched: list[str] = []
    match = authorizer._matches

    def counting(cert: x509.Certificate, issuer_key_id: str) -> bool:
        matched.append(issuer_key_id)
        return match(cert, issuer_key_id)

    seen: list[Any] = []
    process = worker.process

    async def spy(request: Any) -> Any:
        seen.append(request)
        return await process(request)

    authorizer._matches = counting  # type: ignore[method-assign]
    worker.process = spy  # type: ignore[method-assign]
    kept = connection(pki.client.cert)
    try:
        for _ in range(3):
            assert _sent(served, caplog, "Certified", SIGN, kept, BASIC)[::4][:2] == (200, "pipeline")
        refused = _sent(served, caplog, "Certified", SIGN, connection(pki.admin.cert), BASIC)
    finally:
        del authorizer._matches, worker.process
    assert refused[0] == 403 and "is not authorized for worker 'Certified'" in json.loads(refused[2])["error"]
    assert len(matched) == 1 + 2  # the client once for three requests; the refused one by accepts and authorize
    assert [(r.client_certificate, r.client_issuer_key_id, r.remote_address, r.username) for r in seen] == [
        (pki.client.cert, matched[0], "127.0.0.1", None)] * 3


def test_find_looks_a_worker_up_once_per_load(served: Any, pki: PKI) -> None:
    # The worker a request names by its own NAME is looked up by the runtime once (lower-casing, the id
    # test) and remembered until a load or reload puts new maps in place; then it is looked up again.
    # Another spelling (other case, blanks around it: a path can make it any length) is looked up each time.
    from signpeer_core.pipeline import Caller

    services = served[0]
    runtime = services.runtime
    asked: list[str] = []
    get = runtime.get

    def counting(id_or_name: str) -> Any:
        asked.append(id_or_name)
        return get(id_or_name)

    find = DirectSigning(services.pipeline).find
    caller = Caller("REST", None, "127.0.0.1")
    runtime.get = counting  # type: ignore[method-assign]
    try:
        before = runtime.get("Direct")
        asked.clear()
        padded = " " * 10_000 + "Direct"
        for _ in range(3):
            assert [found[0] for found in (find("Direct", caller), find("DIRECT", caller), find(padded, caller))] \
                == [before, before, before]
        assert find("NoSuchWorker", caller) is None and find("NoSuchWorker", caller) is None  # not remembered
        assert asked == ["Direct"] + ["DIRECT", padded] * 3 + ["NoSuchWorker", "NoSuchWorker"]
        runtime.reload_workers([before.id])
        asked.clear()
        after = find("Direct", caller)
        assert after is not None and after[0] is runtime.by_name["direct"] is not before  # the reloaded worker
        assert asked == ["Direct"]
    finally:
        del runtime.get

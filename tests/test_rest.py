"""The REST API over real TLS: signing (verified by openssl), every error status, list, health, admin."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signpeer_core.testing import (
    PKI,
    ServerProcess,
    add_signer,
    client_context,
    open_services,
    wait_until,
    write_home,
)

PROCESS = "/signserver/rest/v1/workers/{}/process"
HEADERS = {"X-Keyfactor-Requested-With": "tests"}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, pki: PKI):
    """One server for the module: PlainSigner, CMSSigner (attached), CMSDetached, and Offline
    (a signer whose token has no password, so it stays OFFLINE until activated)."""
    home = write_home(tmp_path_factory.mktemp("rest") / "home", pki, "max_body_size = 65536\n")
    services = open_services(home)
    add_signer(services, pki, "PlainSigner", AUTHTYPE="NOAUTH")
    add_signer(services, pki, "CMSSigner", implementation="CMSSigner", AUTHTYPE="NOAUTH")
    add_signer(services, pki, "CMSDetached", implementation="CMSSigner", DETACHEDSIGNATURE="true", AUTHTYPE="NOAUTH")
    wid = add_signer(services, pki, "Offline", AUTHTYPE="NOAUTH")
    services.store.update_worker(wid, remove=["KEYSTOREPASSWORD"])
    services.close()
    server = ServerProcess(home, (), None).start()
    yield home, server
    server.stop()


@pytest.fixture
def client(env, pki: PKI):
    _, server = env
    with httpx.Client(base_url=server.url, verify=client_context(pki.ca_pem), headers=HEADERS) as c:
        yield c


def openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], input=input, capture_output=True, timeout=30)


def signer_cert(answer: dict) -> x509.Certificate:
    return x509.load_der_x509_certificate(base64.b64decode(answer["signerCertificate"]))


# -- happy paths -----------------------------------------------------------------------------------

def test_plainsigner_signature_verifies_with_openssl(client: httpx.Client, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4
    r = client.post(PROCESS.format("PlainSigner"),
                    json={"data": base64.b64encode(payload).decode(), "encoding": "BASE64", "metaData": {"a": "b"}})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert set(answer) == {"archiveId", "data", "metaData", "requestId", "signerCertificate"}
    assert answer["requestId"] and answer["archiveId"]
    cert = signer_cert(answer)
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "PlainSigner"
    (tmp_path / "data").write_bytes(payload)
    (tmp_path / "sig").write_bytes(base64.b64decode(answer["data"]))
    (tmp_path / "pub.pem").write_bytes(cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    ok = openssl("dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"), "-signature", str(tmp_path / "sig"),
                 str(tmp_path / "data"))
    assert ok.returncode == 0 and b"Verified OK" in ok.stdout, ok.stderr
    (tmp_path / "data").write_bytes(payload + b"x")
    bad = openssl("dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"), "-signature", str(tmp_path / "sig"),
                  str(tmp_path / "data"))
    assert bad.returncode != 0


def test_worker_by_id_and_text_encoding(client: httpx.Client) -> None:
    r = client.post(PROCESS.format(1), json={"data": "hello"})
    assert r.status_code == 200, r.text
    assert signer_cert(r.json()).subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "PlainSigner"


def test_cms_attached_verifies_with_openssl(client: httpx.Client, pki: PKI, tmp_path: Path) -> None:
    r = client.post(PROCESS.format("CMSSigner"), json={"data": "attached content", "encoding": "NONE"})
    assert r.status_code == 200, r.text
    (tmp_path / "sig.p7").write_bytes(base64.b64decode(r.json()["data"]))
    out = openssl("cms", "-verify", "-CAfile", str(pki.ca_pem), "-inform", "DER", "-in", str(tmp_path / "sig.p7"))
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"attached content"


def test_cms_detached_verifies_with_openssl(client: httpx.Client, pki: PKI, tmp_path: Path) -> None:
    content = b"detached \x00 content"
    r = client.post(PROCESS.format("CMSDetached"), json={"data": base64.b64encode(content).decode(),
                                                         "encoding": "BASE64"})
    assert r.status_code == 200, r.text
    (tmp_path / "sig.p7").write_bytes(base64.b64decode(r.json()["data"]))
    (tmp_path / "content").write_bytes(content)
    out = openssl("cms", "-verify", "-CAfile", str(pki.ca_pem), "-inform", "DER", "-in", str(tmp_path / "sig.p7"),
                  "-content", str(tmp_path / "content"), "-binary", "-out", "/dev/null")
    assert out.returncode == 0, out.stderr
    (tmp_path / "content").write_bytes(content + b"!")
    out = openssl("cms", "-verify", "-CAfile", str(pki.ca_pem), "-inform", "DER", "-in", str(tmp_path / "sig.p7"),
                  "-content", str(tmp_path / "content"), "-binary", "-out", "/dev/null")
    assert out.returncode != 0


# -- errors ----------------------------------------------------------------------------------------

def assert_error(r: httpx.Response, status: int, *words: str) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    message = r.json()["error"]
    assert "Traceback" not in r.text
    for w in words:
        assert w in message, message
    return message


@pytest.mark.parametrize("body, words", [
    ({"data": "!!not base64!!", "encoding": "BASE64"}, ["base64"]),
    ({"data": 5}, ['"data" must be a string']),
    ({"encoding": "NONE"}, ['no "data"']),
    ({"data": "x", "encoding": "ROT13"}, ["encoding"]),
    ({"data": "x", "encoding": 3}, ["encoding"]),
    ({"data": "x", "metaData": {"k": 1}}, ["metaData"]),
    ({"data": "x", "metaData": ["k"]}, ["metaData"]),
    ([1, 2], ["JSON object"]),
])
def test_bad_input_is_400(client: httpx.Client, body: object, words: list[str]) -> None:
    assert_error(client.post(PROCESS.format("PlainSigner"), json=body), 400, *words)


def test_bad_json_and_empty_body_are_400(client: httpx.Client) -> None:
    assert_error(client.post(PROCESS.format("PlainSigner"), content=b"{not json",
                             headers={"content-type": "application/json"}), 400, "not valid JSON")
    assert_error(client.post(PROCESS.format("PlainSigner"), content=b""), 400, "empty")
    assert_error(client.post(PROCESS.format("PlainSigner"), content=b"\xff\xfe"), 400, "JSON")
    # A lone surrogate is valid JSON but not text that can be signed as UTF-8.
    assert_error(client.post(PROCESS.format("PlainSigner"), content=b'{"data": "\\ud800"}'), 400,
                 "not valid Unicode", "BASE64")


def test_foreign_authorization_scheme_does_not_block_noauth_workers(client: httpx.Client) -> None:
    r = client.post(PROCESS.format("PlainSigner"), json={"data": "x"}, headers={"Authorization": "Bearer abc"})
    assert r.status_code == 200, r.text


def test_missing_requested_with_header_is_400(env, pki: PKI) -> None:
    _, server = env
    r = httpx.post(server.url + PROCESS.format("PlainSigner"), json={"data": "x"}, verify=client_context(pki.ca_pem))
    assert_error(r, 400, "X-Keyfactor-Requested-With")


def test_unknown_worker_404(client: httpx.Client) -> None:
    assert_error(client.post(PROCESS.format("NoSuchWorker"), json={"data": "x"}), 404, "NoSuchWorker")
    assert_error(client.post(PROCESS.format(999), json={"data": "x"}), 404, "999")


def test_unknown_route_404_and_wrong_method_405(client: httpx.Client) -> None:
    assert_error(client.get("/nothing/here"), 404, "/nothing/here")
    msg = assert_error(client.get(PROCESS.format("PlainSigner")), 405, "POST")
    assert "GET" in msg


def test_offline_worker_503(client: httpx.Client) -> None:
    assert_error(client.post(PROCESS.format("Offline"), json={"data": "x"}), 503, "activatecryptotoken")


def test_body_over_limit_413_by_content_length(client: httpx.Client) -> None:
    big = json.dumps({"data": "a" * 70000}).encode()
    assert_error(client.post(PROCESS.format("PlainSigner"), content=big), 413, "65536")
    # The connection stays usable (or is replaced transparently) for the next request.
    assert client.post(PROCESS.format("PlainSigner"), json={"data": "x"}).status_code == 200


def test_body_over_limit_413_when_streamed_chunked(client: httpx.Client) -> None:
    sent = []

    def chunks():
        for _ in range(40):  # 40 x 4 KiB = 160 KiB, no Content-Length
            sent.append(1)
            yield b"a" * 4096

    r = client.post(PROCESS.format("PlainSigner"), content=chunks())
    assert_error(r, 413, "limit")


def test_body_just_under_limit_is_accepted(client: httpx.Client) -> None:
    body = json.dumps({"data": "a" * 60000}).encode()
    assert len(body) < 65536
    assert client.post(PROCESS.format("PlainSigner"), content=body).status_code == 200


# -- list, health, admin ---------------------------------------------------------------------------

def test_worker_list_needs_an_administrator(env, https_client) -> None:
    _, server = env
    assert_error(https_client(server).get("/signserver/rest/v1/workers"), 401, "client certificate")
    assert_error(https_client(server, cert="client").get("/signserver/rest/v1/workers"), 403,
                 "not an administrator")


def test_worker_list(env, https_client) -> None:
    _, server = env
    r = https_client(server, cert="admin").get("/signserver/rest/v1/workers")
    assert r.status_code == 200
    workers = {w["name"]: w for w in r.json()["workers"]}
    assert workers["PlainSigner"]["status"] == "ACTIVE" and workers["PlainSigner"]["reasons"] == []
    assert workers["CMSSigner"]["implementation"] == "CMSSigner"
    assert workers["Offline"]["status"] == "OFFLINE"
    assert any("not activated" in reason for reason in workers["Offline"]["reasons"])


def test_healthcheck_503_names_offline_worker(client: httpx.Client) -> None:
    r = client.get("/healthcheck")
    assert r.status_code == 503
    body = r.json()
    assert [w["name"] for w in body["offlineWorkers"]] == ["Offline"]
    assert "Offline" in body["error"]


def test_admin_endpoints_need_an_admin_certificate(env, pki: PKI, https_client) -> None:
    _, server = env
    path = "/signserver/rest/v1/workers/Offline/activate"
    assert_error(https_client(server).post(path, json={"authCode": "foo123"}), 401, "client certificate")
    assert_error(https_client(server, cert="client").post(path, json={"authCode": "foo123"}), 403,
                 "not an administrator")
    assert_error(https_client(server, cert="admin").post(path, json={"authcode": 1}), 400, "authCode")


def test_activate_deactivate_and_healthcheck_200(env, https_client) -> None:
    _, server = env
    admin = https_client(server, cert="admin")
    anon = https_client(server)
    r = admin.post("/signserver/rest/v1/workers/Offline/activate", json={"authCode": "wrong"})
    assert r.status_code == 403, r.text
    r = admin.post("/signserver/rest/v1/workers/Offline/activate", json={"authCode": "foo123"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ACTIVE"
    assert anon.post(PROCESS.format("Offline"), json={"data": "x"}).status_code == 200
    health = anon.get("/healthcheck")
    assert health.status_code == 200 and health.json()["status"] == "ALLCLEAR"
    r = admin.post("/signserver/rest/v1/workers/Offline/deactivate")
    assert r.status_code == 200 and r.json()["status"] == "OFFLINE"
    assert anon.post(PROCESS.format("Offline"), json={"data": "x"}).status_code == 503
    assert anon.get("/healthcheck").status_code == 503


def test_reload_from_another_process_changes_the_answer(env, client: httpx.Client) -> None:
    home, server = env
    assert client.post(PROCESS.format("PlainSigner"), json={"data": "x"}).status_code == 200
    subprocess.run([sys.executable, "-c", _DISABLE.format(home=str(home), value="true")], check=True, timeout=30)
    try:
        wait_until(lambda: client.post(PROCESS.format("PlainSigner"), json={"data": "x"}).status_code == 503,
                   what="the server to pick up DISABLED=true")
        assert "disabled" in client.post(PROCESS.format("PlainSigner"), json={"data": "x"}).json()["error"]
        # A disabled worker does not fail the health check (only enabled ones count).
        assert all(w["name"] != "PlainSigner" for w in client.get("/healthcheck").json().get("offlineWorkers", []))
    finally:
        subprocess.run([sys.executable, "-c", _DISABLE.format(home=str(home), value="false")], check=True, timeout=30)
    wait_until(lambda: client.post(PROCESS.format("PlainSigner"), json={"data": "x"}).status_code == 200,
               what="the server to pick up DISABLED=false")


# Run in a separate interpreter: another process changes the database and bumps the generation.
_DISABLE = """
import sys
from signpeer_core.settings import load_settings
from signpeer_core.storage import open_store
store = open_store(load_settings({home!r}).database)
wid = next(w for w, p in store.all_worker_properties().items() if p.get("NAME") == "PlainSigner")
store.update_worker(wid, {{"DISABLED": {value!r}}})
store.bump_config_generation()
"""


def test_plain_http_is_refused(env) -> None:
    _, server = env
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
        data = s.recv(100)
    assert not data.startswith(b"HTTP/1.1 200")


def test_untrusted_client_certificate_fails_the_handshake(env, tmp_path: Path, pki: PKI) -> None:
    from signpeer_core.testing import make_pki

    other = make_pki(tmp_path / "other")
    _, server = env
    ctx = client_context(pki.ca_pem, other.client.pair)
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, ssl.SSLError)):
        httpx.get(server.url + "/healthcheck", verify=ctx)

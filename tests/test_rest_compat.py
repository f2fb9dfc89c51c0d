"""What SignServer's REST clients, signclient and load balancers send, over real TLS: JSON
``/process`` without ``X-Keyfactor-Requested-With``, base64 with line breaks, multipart uploads,
the generic ``/signserver/process`` interface, 401 for rejected credentials, and the
``/signserver/healthcheck/signserverhealth`` probe. Signatures are checked by openssl."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
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
HEALTH = "/signserver/healthcheck/signserverhealth"
PAYLOAD = bytes(range(256)) * 3
SIGNPEER = Path(sys.executable).parent / "signpeer"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, pki: PKI):
    home = write_home(tmp_path_factory.mktemp("restcompat") / "home", pki)
    services = open_services(home)
    add_signer(services, pki, "Plain", AUTHTYPE="NOAUTH")
    add_signer(services, pki, "Cms", implementation="CMSSigner", AUTHTYPE="NOAUTH")
    add_signer(services, pki, "Users", AUTHTYPE="USERNAME", **{"USER.alice": "wonderland"})
    services.close()
    server = ServerProcess(home, (), None).start()
    yield home, server
    server.stop()


@pytest.fixture
def client(env, pki: PKI):
    _, server = env
    with httpx.Client(base_url=server.url, verify=client_context(pki.ca_pem)) as c:
        yield c


def openssl_verifies(tmp_path: Path, cert_der: bytes, signature: bytes, data: bytes) -> bool:
    from cryptography import x509

    cert = x509.load_der_x509_certificate(cert_der)
    (tmp_path / "pub.pem").write_bytes(cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "data").write_bytes(data)
    (tmp_path / "sig").write_bytes(signature)
    done = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"), "-signature",
                           str(tmp_path / "sig"), str(tmp_path / "data")], capture_output=True, timeout=30)
    return done.returncode == 0 and b"Verified OK" in done.stdout


def signer_der(client: httpx.Client, worker: str) -> bytes:
    r = client.post(PROCESS.format(worker), json={"data": "x"})
    assert r.status_code == 200, r.text
    return base64.b64decode(r.json()["signerCertificate"])


def test_json_process_needs_no_requested_with_header(client: httpx.Client, tmp_path: Path) -> None:
    # SignServer's documented request: JSON, base64 as the base64 tool prints it (line breaks).
    wrapped = base64.encodebytes(PAYLOAD).decode()
    assert "\n" in wrapped
    r = client.post(PROCESS.format("Plain"), json={"data": wrapped, "encoding": "BASE64"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert openssl_verifies(tmp_path, base64.b64decode(answer["signerCertificate"]),
                            base64.b64decode(answer["data"]), PAYLOAD)
    # Spaces and tabs are skipped too; anything else that is not base64 stays a 400.
    spaced = " ".join(base64.b64encode(PAYLOAD).decode()[i:i + 10] for i in range(0, 1024, 10)) + "\t"
    assert client.post(PROCESS.format("Plain"), json={"data": spaced, "encoding": "BASE64"}).status_code == 200
    bad = client.post(PROCESS.format("Plain"), json={"data": "ab*d", "encoding": "BASE64"})
    assert bad.status_code == 400 and "not valid base64" in bad.json()["error"]


def test_a_body_a_browser_may_send_cross_site_still_needs_the_header(client: httpx.Client) -> None:
    # text/plain (and forms) need no CORS preflight: the header stays required for them.
    r = client.post(PROCESS.format("Plain"), content=b'{"data": "x"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 400 and "X-Keyfactor-Requested-With" in r.json()["error"]
    r = client.post(PROCESS.format("Plain"), files={"file": ("doc.bin", PAYLOAD)})
    assert r.status_code == 400 and "X-Keyfactor-Requested-With" in r.json()["error"]


def test_multipart_upload_answers_the_raw_signature(client: httpx.Client, tmp_path: Path, pki: PKI) -> None:
    r = client.post(PROCESS.format("Plain"), files={"file": ("doc.bin", PAYLOAD)},
                    headers={"X-Keyfactor-Requested-With": "1"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    assert openssl_verifies(tmp_path, signer_der(client, "Plain"), r.content, PAYLOAD)
    no_file = client.post(PROCESS.format("Plain"), content=b"--b\r\nContent-Disposition: form-data; name=\"a\""
                          b"\r\n\r\nv\r\n--b--\r\n", headers={"X-Keyfactor-Requested-With": "1",
                                                               "Content-Type": "multipart/form-data; boundary=b"})
    assert no_file.status_code == 400 and "Missing file content" in no_file.json()["error"]


def test_signclient_generic_process_interface(client: httpx.Client, tmp_path: Path, pki: PKI) -> None:
    cert = signer_der(client, "Plain")
    # multipart, worker named in a form field (signclient's default transport)
    r = client.post("/signserver/process", data={"workerName": "Plain"}, files={"datafile": ("d", PAYLOAD)})
    assert r.status_code == 200, r.text
    assert openssl_verifies(tmp_path, cert, r.content, PAYLOAD)
    # url-encoded form with base64 data, worker by id in the query
    with httpx.Client(base_url=str(client.base_url), verify=client_context(pki.ca_pem, pki.admin.pair)) as admin:
        wid = admin.get("/signserver/rest/v1/workers").json()["workers"]  # the list is for administrators
    plain_id = next(w["id"] for w in wid if w["name"] == "Plain")
    r = client.post(f"/signserver/process?workerId={plain_id}",
                    data={"data": base64.b64encode(PAYLOAD).decode(), "encoding": "base64"})
    assert r.status_code == 200, r.text
    assert openssl_verifies(tmp_path, cert, r.content, PAYLOAD)
    # raw body, worker in the path; CMS output verified by openssl cms
    r = client.post("/signserver/worker/Cms", content=PAYLOAD, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    (tmp_path / "out.p7s").write_bytes(r.content)
    done = subprocess.run(["openssl", "cms", "-verify", "-CAfile", str(pki.ca_pem), "-inform", "DER", "-in",
                           str(tmp_path / "out.p7s"), "-binary"], capture_output=True, timeout=30)
    assert done.returncode == 0 and done.stdout == PAYLOAD, done.stderr
    # mistakes are 4xx with SignServer's words
    r = client.post("/signserver/process", data={"data": "x"})
    assert r.status_code == 400 and "Missing worker name or ID" in r.json()["error"]
    r = client.post("/signserver/process", data={"workerName": "Plain", "data": "x", "encoding": "hex"})
    assert r.status_code == 400 and "Unknown encoding" in r.json()["error"]
    r = client.post("/signserver/process", data={"workerName": "Nobody", "data": "x"})
    assert r.status_code == 404


def test_generic_interface_refuses_cross_site_browsers(client: httpx.Client) -> None:
    r = client.post("/signserver/process", data={"workerName": "Plain", "data": "x"},
                    headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.json()["error"]
    r = client.post("/signserver/process", data={"workerName": "Plain", "data": "x"},
                    headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    same = client.post("/signserver/process", data={"workerName": "Plain", "data": "x"},
                       headers={"Origin": str(client.base_url).rstrip("/")})
    assert same.status_code == 200, same.text


def test_rejected_credentials_are_401(client: httpx.Client) -> None:
    assert client.post(PROCESS.format("Users"), json={"data": "x"}, auth=("alice", "wonderland")).status_code == 200
    wrong = client.post(PROCESS.format("Users"), json={"data": "x"}, auth=("alice", "nope"))
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Basic")
    assert client.post(PROCESS.format("Users"), json={"data": "x"}, auth=("mallory", "x")).status_code == 401


def test_signserverhealth_allok_then_error_lines(env, client: httpx.Client) -> None:
    home, _ = env
    r = client.get(HEALTH)
    assert (r.status_code, r.text) == (200, "ALLOK") and r.headers["content-type"].startswith("text/plain")
    for command in (["removeproperty", "Cms", "KEYSTOREPASSWORD"], ["reload", "all"]):
        done = subprocess.run([str(SIGNPEER), "--home", str(home), *command], capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
    wait_until(lambda: client.get(HEALTH).status_code == 500, timeout=20)
    r = client.get(HEALTH)
    assert "Cms" in r.text and "ALLOK" not in r.text

"""End to end over real TLS: a client gets a token from the provider, signs through a CMSSigner
on a one-time worker in RA mode, the CA peer (``signpeer ra serve``, its own process) issues the
certificate, and ``openssl cms -verify`` / ``openssl x509 -text`` show the token's identity in it.

Also over REST: every kind of refusal with its status and ``WWW-Authenticate`` challenge, and the
server's log holding no token.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from signpeer_core import devpki
from signpeer_core.clientrules import ClientRule, serialize_rules
from signpeer_core.testing import add_signer, open_services, run_signpeer, server_env, signpeer_cmd, wait_until

PROCESS = "/signserver/rest/v1/workers/{}/process"
CLAIMS = {"groups": ["signers"], "aud": "signpeer", "email": "alice@example.com", "name": "Alice Example"}


def setup_ra(home: Path, pki: Any, ca_peer: Any, idp: Any, props_for: Any) -> None:
    services = open_services(home)
    try:
        store = services.store
        store.update_global({"GLOB.PEERS_INCOMING_ENABLED": "true",
                             "GLOB.WSPEERS": serialize_rules([ClientRule.for_certificate(ca_peer.cert)])})
        store.update_worker(1, {"NAME": "SoftSource", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
                                "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "SoftCryptoToken", "KEYSTORETYPE": "INTERNAL",
                                "KEYSTOREPASSWORD": "foo123"})
        store.update_worker(2, {
            "NAME": "OneTimeRA", "IMPLEMENTATION_CLASS": "OneTimeCryptoWorker", "CRYPTOTOKEN": "SoftSource",
            "KEYALG": "ECDSA", "KEYSPEC": "prime256v1", "CERTSIGNATUREALGORITHM": "SHA256withECDSA",
            "CACONNECTOR_IMPLEMENTATION": "org.signserver.module.onetime.caconnector.EjbcaPeersCAConnector",
            "CANAME": "OneTimeCA", "ENDENTITYPROFILE": "EMPTY", "CERTIFICATEPROFILE": "ENDUSER",
            "USERNAME_PATTERN": "onetime-${JWT.sub}-${transactionId}",
            "SUBJECTDN_PATTERN": "CN=${JWT.name},E=${claim.email},UID=${transactionId},O=signpeer JWT tests,C=SE",
            "SUBJECTALTNAME_PATTERN": "rfc822Name=${JWT.email},uri=${JWT.iss}/users/${JWT.sub}",
            "CACONNECTOR_WAITTIMEOUT": "15"})
        store.update_worker(3, {"NAME": "JwtCMS", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "CMSSigner",
                                "CRYPTOTOKEN": "OneTimeRA", **props_for(idp)})
        add_signer(services, pki, "JwtPlain", **props_for(idp))
        store.bump_config_generation()
    finally:
        services.close()


def sign(client: Any, worker: str, data: bytes, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post(PROCESS.format(worker), headers=headers,
                       json={"data": base64.b64encode(data).decode(), "encoding": "BASE64"})


def openssl(*args: str) -> str:
    out = subprocess.run(["openssl", *args], capture_output=True, check=False)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode(errors="replace")


@pytest.fixture
def ca_peer(pki: Any) -> Any:
    return pki.issue_client("CA peer", dn_suffix=", O=signpeer CA")


def test_token_to_one_time_certificate_through_the_ca_peer(home: Path, pki: Any, ca_peer: Any, idp: Any,
                                                           props_for: Any, start_server: Any, https_client: Any,
                                                           tmp_path: Path) -> None:
    setup_ra(home, pki, ca_peer, idp, props_for)
    server = start_server(home)
    ca_key = tmp_path / "ca-key.pem"
    devpki.write_private(ca_key, devpki.key_pem(pki.ca_key))
    # The CA peer: the CA side's command, with a policy on the claims that travel with requests.
    ca = subprocess.Popen(signpeer_cmd("ra", "serve", server.url, "--cert", str(ca_peer.pem), "--key",
                                       str(ca_peer.key_pem), "--cacert", str(pki.ca_pem), "--issuer-cert",
                                       str(pki.ca_pem), "--issuer-key", str(ca_key),
                                       "--wait", "2", "--require-claim", "email=alice@example.com", "--count", "2"),
                          env=server_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    client = https_client(server)
    tokens = []
    try:
        token = idp.token(CLAIMS)
        tokens.append(token)
        document = b"release 1.0 of the thing"
        resp = sign(client, "JwtCMS", document, token)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        (tmp_path / "doc.p7m").write_bytes(base64.b64decode(body["data"]))
        (tmp_path / "signer.der").write_bytes(base64.b64decode(body["signerCertificate"]))
        verified = openssl("cms", "-verify", "-inform", "DER", "-in", str(tmp_path / "doc.p7m"),
                           "-CAfile", str(pki.ca_pem), "-purpose", "any")
        assert verified.encode() == document
        text = openssl("x509", "-inform", "DER", "-in", str(tmp_path / "signer.der"), "-noout", "-text")
        assert "emailAddress = alice@example.com, CN = Alice Example" in text, text
        assert "email:alice@example.com" in text
        assert f"URI:{idp.issuer}/users/alice" in text
        # The CA's policy: bob's claims travel with his request, and the CA refuses them.
        bob = idp.token({**CLAIMS, "email": "bob@example.com", "name": "Bob", "sub": "bob"})
        tokens.append(bob)
        resp = sign(client, "JwtCMS", b"bob's", bob)
        assert resp.status_code == 502, resp.text
        assert "requires token claim email='alice@example.com'" in resp.json()["error"]
        # A template naming a claim the token lacks: 400 before anything is queued.
        nameless = idp.token({k: v for k, v in CLAIMS.items() if k != "name"})
        tokens.append(nameless)
        resp = sign(client, "JwtCMS", b"x", nameless)
        assert resp.status_code == 400 and "the token has no claim 'name'" in resp.json()["error"], resp.text
        out, err = ca.communicate(timeout=60)
        assert ca.returncode == 0, err.decode()
        assert "2 RA requests: 1 issued, 1 refused" in out.decode()
    finally:
        if ca.poll() is None:
            ca.kill()
            ca.communicate()
    listing = json.loads(run_signpeer(home, "ra", "requests", "--json").stdout)
    assert len(listing["requests"]) == 2  # the nameless request never reached the queue
    alice = next(r for r in listing["requests"] if r["error"] is None)
    assert alice["tokenClaims"] == {"name": "Alice Example", "email": "alice@example.com", "iss": idp.issuer,
                                    "sub": "alice"}
    assert alice["subjectDn"].startswith("CN=Alice Example")
    text = run_signpeer(home, "ra", "requests").stdout.decode()
    line = next(ln for ln in text.splitlines() if "token claims" in ln and "issued" in ln)
    assert "email=alice@example.com" in line and "name=Alice Example" in line and "sub=alice" in line, text
    log = server.log()
    for token in tokens:
        assert token not in log and token.split(".")[2] not in log


def test_rest_refusals_and_the_challenge(home: Path, pki: Any, ca_peer: Any, idp: Any, make_idp: Any,
                                         props_for: Any, start_server: Any, https_client: Any,
                                         silent_server: Any) -> None:
    setup_ra(home, pki, ca_peer, idp, props_for)
    services = open_services(home)
    try:
        add_signer(services, pki, "Hanging", JWKS_TIMEOUT="1",
                   **props_for(idp, **{"AUTHSERVER1.JWKS_URL": f"https://localhost:{silent_server.port}/jwks"}))
        services.store.bump_config_generation()
    finally:
        services.close()
    server = start_server(home)
    client = https_client(server)
    other = make_idp(name="other")
    invalid = 'Bearer realm="signpeer", error="invalid_token"'
    cases = [
        (None, 401, 'Bearer realm="signpeer"', "requires a bearer token"),
        (idp.token({**CLAIMS, "exp": int(time.time()) - 3600}), 401, invalid, "expired"),
        (idp.token({**CLAIMS, "aud": "elsewhere"}), 401, invalid, "audience"),
        (other.token(CLAIMS), 401, invalid, "not trusted"),
        (idp.token({**CLAIMS, "groups": ["staff"]}), 403, None, "matches no claim rule"),
        ("x" * 17000, 400, 'Bearer realm="signpeer", error="invalid_request"', "more than"),
        ("abc.def", 400, 'Bearer realm="signpeer", error="invalid_request"', "compact form"),
    ]
    for token, status, challenge, reason in cases:
        resp = sign(client, "JwtPlain", b"doc", token)
        assert resp.status_code == status, (token and token[:20], resp.text)
        assert resp.headers.get("www-authenticate") == challenge
        assert reason in resp.json()["error"]
    assert sign(client, "JwtPlain", b"doc", idp.token(CLAIMS)).status_code == 200
    # Basic credentials are no token.
    resp = client.post(PROCESS.format("JwtPlain"), auth=("alice", "pw"), json={"data": "x"})
    assert resp.status_code == 401
    started = time.monotonic()
    resp = sign(client, "Hanging", b"doc", idp.token(CLAIMS))
    assert resp.status_code == 503 and "JWKS_TIMEOUT" in resp.json()["error"]
    assert time.monotonic() - started < 5
    wait_until(lambda: "outcome=FAILED 503" in server.log(), timeout=10)
    log = server.log()
    assert "expired" in log and "matches no claim rule" in log  # the reasons are in the worker log
    for token, *_ in cases:
        if token and "." in token and len(token) < 16384:
            assert token not in log

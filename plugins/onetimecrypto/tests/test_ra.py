"""RA mode over real TLS: a ``signpeer serve`` subprocess (two server processes) queues the
one-time keys' certificate requests; a CA peer collects them over the peer endpoint with its
client certificate, issues, and answers. Signatures verified with ``openssl cms -verify``."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from signpeer_core.clientrules import ClientRule, serialize_rules
from signpeer_core.keys import format_dn, public_key_der
from signpeer_core.testing import PKI, client_context, open_services, run_signpeer, wait_until
from signpeer_onetimecrypto.connectors import CARefusedError, issue_for_request

PROCESS = "/signserver/rest/v1/workers/{}/process"


def setup_ra(home: Path, ca_peer: Any, wait_timeout: str = "10", caname: str | None = "OneTimeCA") -> None:
    services = open_services(home)
    try:
        store = services.store
        store.update_global({"GLOB.PEERS_INCOMING_ENABLED": "true",
                             "GLOB.WSPEERS": serialize_rules([ClientRule.for_certificate(ca_peer.cert)])})
        store.update_worker(1, {"NAME": "SoftSource", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
                                "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "SoftCryptoToken", "KEYSTORETYPE": "INTERNAL",
                                "KEYSTOREPASSWORD": "foo123"})
        store.update_worker(2, {
            "NAME": "OneTimeRA", "IMPLEMENTATION_CLASS": "org.signserver.module.onetime.cryptoworker.OneTimeCryptoWorker",
            "CRYPTOTOKEN": "SoftSource", "KEYALG": "ECDSA", "KEYSPEC": "prime256v1",
            "CACONNECTOR_IMPLEMENTATION": "org.signserver.module.onetime.caconnector.EjbcaPeersCAConnector",
            "CANAME": "OneTimeCA", "ENDENTITYPROFILE": "EMPTY", "CERTIFICATEPROFILE": "ENDUSER",
            "USERNAME_PATTERN": "onetime-${transactionId}", "CERTSIGNATUREALGORITHM": "SHA256withECDSA",
            "SUBJECTDN_PATTERN": "CN=User ${username},UID=${transactionId},O=signpeer RA tests,C=SE",
            "SUBJECTALTNAME_PATTERN": "rfc822Name=${username}@example.com",
            "CACONNECTOR_WAITTIMEOUT": wait_timeout})
        store.update_worker(3, {"NAME": "RASigner", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "CMSSigner",
                                "CRYPTOTOKEN": "OneTimeRA", "AUTHTYPE": "USERNAME", "ACCEPT_ALL_USERNAMES": "true"})
        if caname is None:  # as SignServer's own EjbcaPeers example block
            store.update_worker(2, remove=["CANAME"])
        store.bump_config_generation()
    finally:
        services.close()


def rest_client(url: str, pki: PKI) -> httpx.Client:
    """A REST client of the server at ``url``, without a client certificate."""
    return httpx.Client(base_url=url, verify=client_context(pki.ca_pem), timeout=30,
                        headers={"X-Keyfactor-Requested-With": "tests"})


def sign(client: httpx.Client, data: bytes, user: str) -> httpx.Response:
    return client.post(PROCESS.format("RASigner"), auth=(user, ""),
                       json={"data": base64.b64encode(data).decode(), "encoding": "BASE64"})


def verify(tmp_path: Path, ca_pem: Path, cms: bytes, data: bytes) -> None:
    sig = tmp_path / f"sig-{time.monotonic_ns()}.p7m"
    sig.write_bytes(cms)
    out = subprocess.run(["openssl", "cms", "-verify", "-inform", "DER", "-in", str(sig), "-CAfile", str(ca_pem),
                          "-purpose", "any"], capture_output=True, check=False)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout == data


@pytest.fixture
def ca_peer(pki: Any) -> Any:
    return pki.issue_client("CA peer", dn_suffix=", O=signpeer CA")


def ra_loop(server: Any, ca_peer: Any, pki: Any, issuer: Any = None, **kwargs: Any) -> Any:
    from signpeer_onetimecrypto.raclient import RALoop, ra_client

    client = ra_client(server.url, ca_peer.pem, ca_peer.key_pem, pki.ca_pem, max_connections=12)
    issue = issuer or (lambda req: issue_for_request(pki.ca_key, [pki.ca_cert], req))
    loop = RALoop(client, issue, min_parallel=kwargs.pop("min_parallel", 2), max_parallel=kwargs.pop("max_parallel", 6),
                  wait=kwargs.pop("wait", 2.0), **kwargs)
    loop.client_ = client
    return loop.start()


def close_loop(loop: Any) -> None:
    """Stop the pollers (each finishes its long poll), then close their connections: an idle
    connection left open would hold the server's TLS shutdown (and the test's teardown) for 30 s."""
    loop.close()
    loop.client_.close()


def test_ra_flow_two_server_processes(home: Path, pki: Any, ca_peer: Any, start_server: Any, tmp_path: Path) -> None:
    setup_ra(home, ca_peer)
    server = start_server(home, "--workers", "2")
    loop = ra_loop(server, ca_peer, pki)
    try:
        # The administrator's certificate: the worker list is for administrators.
        with httpx.Client(base_url=server.url, verify=client_context(pki.ca_pem, pki.admin.pair),
                          headers={"X-Keyfactor-Requested-With": "tests"}, timeout=30) as client:
            status = client.get("/signserver/rest/v1/workers").json()["workers"]
            assert all(w["status"] == "ACTIVE" for w in status), status
            docs = [(f"document {i}".encode(), f"user{i % 3}") for i in range(40)]

            def one(item: tuple[bytes, str]) -> httpx.Response:
                # A client per thread: new connections spread over both server processes.
                with rest_client(server.url, pki) as c:
                    return sign(c, *item)

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                responses = list(pool.map(one, docs))
        certs = []
        for (data, user), resp in zip(docs, responses, strict=True):
            assert resp.status_code == 200, resp.text
            body = resp.json()
            verify(tmp_path, pki.ca_pem, base64.b64decode(body["data"]), data)
            cert = x509.load_der_x509_certificate(base64.b64decode(body["signerCertificate"]))
            assert cert.issuer == pki.ca_cert.subject
            dn = format_dn(cert.subject)
            assert dn.startswith(f"CN=User {user}, UID=") and dn.endswith("O=signpeer RA tests, C=SE"), dn
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert san.get_values_for_type(x509.RFC822Name) == [f"{user}@example.com"]
            certs.append(cert)
        assert len({public_key_der(c) for c in certs}) == len(docs)
        assert len({c.serial_number for c in certs}) == len(docs)
        assert loop.stats.issued == len(docs)
    finally:
        close_loop(loop)
    listing = run_signpeer(home, "ra", "requests", "--json")
    assert listing.returncode == 0, listing.stderr
    data = json.loads(listing.stdout)
    assert sum(1 for r in data["requests"] if r["state"] == "answered") == 40
    assert data["caPeers"][0]["identity"].startswith("CN=CA peer")
    text = run_signpeer(home, "ra", "requests").stdout.decode()
    assert "40 answered" in text and "CA peer CN=CA peer" in text


def test_ra_refusal_timeout_late_and_second_answers(home: Path, pki: Any, ca_peer: Any, start_server: Any) -> None:
    setup_ra(home, ca_peer, wait_timeout="2")
    server = start_server(home)

    def picky(req: Any) -> list[x509.Certificate]:
        if "mallory" in req.subject_dn:
            raise CARefusedError("end entity 'mallory' is revoked by CA policy")
        return issue_for_request(pki.ca_key, [pki.ca_cert], req)

    with httpx.Client(base_url=server.url, verify=client_context(pki.ca_pem),
                      headers={"X-Keyfactor-Requested-With": "tests"}, timeout=30) as client:
        # 1. No CA peer at all: 503 after the wait, naming the queue and saying nobody is connected.
        resp = sign(client, b"nobody home", "alice")
        assert resp.status_code == 503, resp.text
        err = resp.json()["error"]
        assert "RA queue 'OneTimeCA'" in err and "no CA peer is connected" in err and "key was deleted" in err, err
        # 2. The CA refuses: its reason reaches the client.
        loop = ra_loop(server, ca_peer, pki, issuer=picky)
        try:
            resp = sign(client, b"refused", "mallory")
            assert resp.status_code == 502, resp.text
            assert "revoked by CA policy" in resp.json()["error"]
            assert sign(client, b"fine", "bob").status_code == 200
        finally:
            close_loop(loop)
        # 3. A CA peer that claims but never answers: offered again, then 503 saying who claimed it.
        from signpeer_core.errors import ConflictError, NotFoundError
        from signpeer_onetimecrypto.raclient import ra_client

        peer = ra_client(server.url, ca_peer.pem, ca_peer.key_pem, pki.ca_pem)
        got: dict[str, Any] = {}

        def claim_twice() -> None:
            first = peer.request("POST", "/ra/claim", json={"wait": 5, "lease": 1}).json()["requests"]
            second = peer.request("POST", "/ra/claim", json={"wait": 5, "lease": 1}).json()["requests"]
            got["first"], got["second"] = first, second

        t = threading.Thread(target=claim_twice)
        t.start()
        resp = sign(client, b"claimed only", "carol")
        t.join()
        assert resp.status_code == 503
        assert "claimed 2 time(s)" in resp.json()["error"] and "CA peer connected" in resp.json()["error"]
        assert got["first"] and got["second"] and got["first"][0]["id"] == got["second"][0]["id"]
        offer = got["first"][0]
        # 4. A late answer is refused without harm.
        from signpeer_onetimecrypto.connectors import CertificateRequest

        chain = issue_for_request(pki.ca_key, [pki.ca_cert], CertificateRequest.from_json(offer))
        pem = "".join(c.public_bytes(__import__("cryptography.hazmat.primitives.serialization",
                                                fromlist=["Encoding"]).Encoding.PEM).decode() for c in chain)
        with pytest.raises(ConflictError, match="expired"):
            peer.request("POST", f"/ra/requests/{offer['id']}/result", json={"chain": pem})
        # 5. A second answer is refused without harm (the first one stays).
        loop = ra_loop(server, ca_peer, pki)
        try:
            resp = sign(client, b"once", "dave")
            assert resp.status_code == 200
        finally:
            close_loop(loop)
        rows = json.loads(run_signpeer(home, "ra", "requests", "--json", "--state", "answered").stdout)["requests"]
        dave = next(r for r in rows if r["error"] is None and r["id"])
        with pytest.raises(ConflictError, match="already answered"):
            peer.request("POST", f"/ra/requests/{dave['id']}/result", json={"error": "changed my mind"})
        # 6. Garbage and unknown ids.
        with pytest.raises(NotFoundError, match="no RA request"):
            peer.request("POST", "/ra/requests/nope/result", json={"error": "x"})
        peer.close()
    states = json.loads(run_signpeer(home, "ra", "requests", "--json").stdout)["requests"]
    assert {r["state"] for r in states} == {"answered", "expired"}


def test_unauthorized_peer_sees_no_requests(home: Path, pki: Any, ca_peer: Any, start_server: Any) -> None:
    from signpeer_core.errors import AuthorizationError
    from signpeer_onetimecrypto.raclient import ra_client

    setup_ra(home, ca_peer)
    server = start_server(home)
    stranger = pki.issue_client("stranger")
    with ra_client(server.url, stranger.pem, stranger.key_pem, pki.ca_pem) as peer:
        with pytest.raises(AuthorizationError, match="Unauthorized"):
            peer.request("POST", "/ra/claim", json={"wait": 0})
        with pytest.raises(AuthorizationError):
            peer.request("POST", "/ra/requests/x/result", json={"error": "x"})


def test_connector_restart_loses_nothing(home: Path, pki: Any, ca_peer: Any, start_server: Any) -> None:
    """A CA peer claims a request and dies without answering; the request comes back after its
    lease, the next connector answers, and the signing request succeeds."""
    from signpeer_onetimecrypto.raclient import ra_client

    setup_ra(home, ca_peer, wait_timeout="15")
    server = start_server(home)
    dying = ra_client(server.url, ca_peer.pem, ca_peer.key_pem, pki.ca_pem)
    claimed: dict[str, Any] = {}

    def claim_and_die() -> None:
        claimed["offers"] = dying.request("POST", "/ra/claim", json={"wait": 10, "lease": 2}).json()["requests"]
        dying.close()

    t = threading.Thread(target=claim_and_die)
    t.start()
    result: dict[str, Any] = {}

    def client_sign() -> None:
        with rest_client(server.url, pki) as c:
            result["response"] = sign(c, b"survives a connector crash", "erin")

    s = threading.Thread(target=client_sign)
    s.start()
    t.join()
    assert claimed["offers"], "the first connector got nothing"
    loop = ra_loop(server, ca_peer, pki, lease=2.0)
    try:
        s.join(30)
    finally:
        close_loop(loop)
    assert result["response"].status_code == 200, result["response"].text
    row = json.loads(run_signpeer(home, "ra", "requests", "--json").stdout)["requests"][0]
    assert row["state"] == "answered" and row["claims"] == 2
    purge = run_signpeer(home, "ra", "purge", "--older-than", "0")
    assert b"Deleted 1 answered or expired" in purge.stdout, purge.stderr
    audit = json.loads(run_signpeer(home, "auditlog", "--event", "RA_REQUESTS_PURGED", "--json").stdout)
    assert [(a["module"], a["details"]) for a in audit] == [("RA", {"OLDER_THAN_HOURS": "0", "DELETED": "1"})]


#: The CA side's two spellings: one implementation (``commands.serve``), two entry points.
SERVE_COMMANDS = [("ra", "serve"), ("connector", "serve-ra")]


@pytest.mark.parametrize("command", SERVE_COMMANDS, ids=" ".join)
def test_serve_help_lists_the_same_options(command: tuple[str, str], tmp_path: Path) -> None:
    out = run_signpeer(tmp_path, *command, "--help")
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert f"usage: signpeer {' '.join(command)}" in text
    for option in ("url", "--cert", "--key", "--cacert", "--issuer-cert", "--issuer-key", "--min-parallel",
                   "--max-parallel", "--queue", "--wait", "--batch", "--count", "--duration"):
        assert option in text, f"{option} missing from {' '.join(command)} --help"


@pytest.mark.parametrize("command", SERVE_COMMANDS, ids=" ".join)
def test_ra_serve_command(command: tuple[str, str], home: Path, pki: Any, ca_peer: Any, start_server: Any,
                          tmp_path: Path) -> None:
    """``signpeer ra serve`` / ``signpeer connector serve-ra`` as the CA side runs it: pings, issues
    three, exits with a summary."""
    from signpeer_core import devpki
    from signpeer_core.testing import server_env, signpeer_cmd

    setup_ra(home, ca_peer)
    server = start_server(home)
    issuer_cert, issuer_key = tmp_path / "issuer.pem", tmp_path / "issuer-key.pem"
    devpki.write_public(issuer_cert, devpki.cert_pem(pki.ca_cert))
    devpki.write_private(issuer_key, devpki.key_pem(pki.ca_key))
    ra = subprocess.Popen(signpeer_cmd(*command, server.url, "--cert", str(ca_peer.pem), "--key",
                                       str(ca_peer.key_pem), "--cacert", str(pki.ca_pem), "--issuer-cert",
                                       str(issuer_cert), "--issuer-key", str(issuer_key), "--min-parallel", "1",
                                       "--max-parallel", "3", "--wait", "2", "--count", "3"),
                          env=server_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with rest_client(server.url, pki) as client:
            for i in range(3):
                resp = sign(client, f"cli {i}".encode(), "frank")
                assert resp.status_code == 200, resp.text
                verify(tmp_path, pki.ca_pem, base64.b64decode(resp.json()["data"]), f"cli {i}".encode())
        out, err = ra.communicate(timeout=30)
    finally:
        if ra.poll() is None:
            ra.kill()
    assert ra.returncode == 0, err.decode()
    assert b"Serving RA requests" in out and b"Answered 3 RA requests: 3 issued" in out, out


@pytest.mark.parametrize("command", SERVE_COMMANDS, ids=" ".join)
def test_ra_serve_unreachable_server_exit_code(command: tuple[str, str], pki: Any, tmp_path: Path) -> None:
    """No server at the URL: one line naming it and what to check, the connector's exit code 5."""
    import socket

    from signpeer_core import devpki

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    issuer_cert, issuer_key = tmp_path / "issuer.pem", tmp_path / "issuer-key.pem"
    devpki.write_public(issuer_cert, devpki.cert_pem(pki.ca_cert))
    devpki.write_private(issuer_key, devpki.key_pem(pki.ca_key))
    r = run_signpeer(tmp_path, *command, f"https://127.0.0.1:{port}", "--cert", str(pki.client.pem), "--key",
                     str(pki.client.key_pem), "--cacert", str(pki.ca_pem), "--issuer-cert", str(issuer_cert),
                     "--issuer-key", str(issuer_key))
    err = r.stderr.decode()
    assert r.returncode == 5, err
    assert f"cannot connect to https://127.0.0.1:{port}" in err and "Traceback" not in err


def test_ra_without_caname_uses_the_default_queue(home: Path, pki: Any, ca_peer: Any, start_server: Any,
                                                  tmp_path: Path) -> None:
    """SignServer's documented EjbcaPeers block has no CANAME: the worker is ACTIVE and its requests
    go to the queue 'default', which a CA peer serving every queue answers."""
    setup_ra(home, ca_peer, caname=None)
    server = start_server(home)
    loop = ra_loop(server, ca_peer, pki)
    try:
        with httpx.Client(base_url=server.url, verify=client_context(pki.ca_pem), timeout=30) as client:
            with httpx.Client(base_url=server.url, verify=client_context(pki.ca_pem, pki.admin.pair)) as admin:
                listing = admin.get("/signserver/rest/v1/workers").json()["workers"]  # for administrators
            status = {w["name"]: w for w in listing}
            assert status["OneTimeRA"]["status"] == "ACTIVE", status["OneTimeRA"]
            resp = sign(client, b"no CA name", "alice")
            assert resp.status_code == 200, resp.text
            verify(tmp_path, pki.ca_pem, base64.b64decode(resp.json()["data"]), b"no CA name")
    finally:
        close_loop(loop)
    listing = json.loads(run_signpeer(home, "ra", "requests", "--json").stdout)
    assert [r["queue"] for r in listing["requests"]] == ["default"]


def test_answers_ride_on_the_next_claim(home: Path, pki: Any, ca_peer: Any, start_server: Any, tmp_path: Path) -> None:
    """A claim may carry the answers to earlier claims (``answers``): each is recorded as the result
    operation would (409 second answer, 404 unknown id, 400 wrong leaf, said per answer), then the
    poll looks for work. ``signpeer ra serve``'s loop sends them that way, and each one on its own
    to a server that does not say it takes them."""
    from signpeer_core.errors import BadRequestError
    from signpeer_core.keys import certificate_pem
    from signpeer_core.testing import wait_until
    from signpeer_onetimecrypto.connectors import CertificateRequest
    from signpeer_onetimecrypto.raclient import RALoop, ra_client

    setup_ra(home, ca_peer, wait_timeout="20")
    server = start_server(home)
    results: dict[str, httpx.Response] = {}

    def client_sign(name: str) -> threading.Thread:
        def run() -> None:
            with rest_client(server.url, pki) as c:
                results[name] = sign(c, name.encode(), name)
        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def pem(offer: dict[str, Any]) -> str:
        return certificate_pem(issue_for_request(pki.ca_key, [pki.ca_cert], CertificateRequest.from_json(offer)))

    with ra_client(server.url, ca_peer.pem, ca_peer.key_pem, pki.ca_pem) as peer:
        idle = peer.json("POST", "/ra/claim", json={"wait": 0})
        # "answers": this server takes them; "process": which server process answered, of "processes"
        assert idle == {"requests": [], "leaseSeconds": 10, "answers": [], "process": idle["process"], "processes": 1}
        assert isinstance(idle["process"], str) and idle["process"]
        alice = client_sign("alice")
        first = peer.json("POST", "/ra/claim", json={"wait": 10})["requests"][0]
        bob = client_sign("bob")
        reply = peer.json("POST", "/ra/claim", json={"wait": 10, "answers": [
            {"id": first["id"], "chain": pem(first)}, {"id": first["id"], "error": "changed my mind"},
            {"id": "nope", "error": "x"}]})
        outcomes = reply["answers"]
        assert outcomes[0] == {"id": first["id"], "state": "answered"}
        assert outcomes[1]["status"] == 409 and "already answered" in outcomes[1]["error"]
        assert outcomes[2] == {"id": "nope", "status": 404, "error": "no RA request 'nope'"}
        alice.join(30)
        assert results["alice"].status_code == 200, results["alice"].text
        verify(tmp_path, pki.ca_pem, base64.b64decode(results["alice"].json()["data"]), b"alice")
        # The claim went on to bob's request; a chain for another key is refused and changes nothing.
        second = reply["requests"][0]
        wrong = peer.json("POST", "/ra/claim", json={"wait": 0, "answers": [{"id": second["id"], "chain": pem(first)}]})
        assert wrong["answers"][0]["status"] == 400 and "not for the public key" in wrong["answers"][0]["error"]
        right = peer.json("POST", "/ra/claim", json={"wait": 0, "answers": [{"id": second["id"], "chain": pem(second)}]})
        assert right["answers"] == [{"id": second["id"], "state": "answered"}]
        bob.join(30)
        assert results["bob"].status_code == 200, results["bob"].text
        for bad in ("x", [{"chain": []}], [{"id": 1, "error": "x"}], [{"id": "a", "error": "x"}] * 101):
            with pytest.raises(BadRequestError, match="'answers' must be a list"):
                peer.request("POST", "/ra/claim", json={"wait": 0, "answers": bad})

    # The RA loop: answers with its next claims, none on its own; forced to the old way, each on its own.
    for with_claim, users in ((None, ("carol", "dave", "erin")), (False, ("frank", "grace"))):
        client = ra_client(server.url, ca_peer.pem, ca_peer.key_pem, pki.ca_pem, max_connections=4)
        posted: list[str] = []
        request = client.request

        def counting(method: str, path: str, *args: Any, _request: Any = request, _posted: list[str] = posted,
                     **kwargs: Any) -> Any:
            _posted.append(path)
            return _request(method, path, *args, **kwargs)

        client.request = counting  # type: ignore[method-assign]  # watches which operations the loop sends
        loop = RALoop(client, lambda req: issue_for_request(pki.ca_key, [pki.ca_cert], req), min_parallel=1,
                      max_parallel=2, wait=2.0)
        loop._with_claim = with_claim
        loop.start()
        try:
            threads = [client_sign(user) for user in users]
            for thread in threads:
                thread.join(30)
            assert all(results[u].status_code == 200 for u in users), [results[u].text for u in users]
            # Posted on its own, an answer is counted once the server's reply reached the poller.
            wanted = len(users)
            wait_until(lambda ra=loop, n=wanted: ra.stats.issued == n, timeout=10, what="the answers counted")
        finally:
            loop.close()
            client.close()
        results_posted = [p for p in posted if p.endswith("/result")]
        if with_claim is None:
            assert loop._with_claim is True and results_posted == []
        else:
            assert len(results_posted) == len(users)
        assert loop.stats.issued == len(users) and loop.stats.discarded == 0 and loop.stats.errors == 0


def queue_signatures(home: Path, server: Any, pki: Any, users: tuple[str, ...],
                     ) -> tuple[list[threading.Thread], dict[str, httpx.Response]]:
    """One signing client per user, each waiting on its RA request; returns once all of them are
    pending in the queue (the threads, and where each one's response will be)."""
    results: dict[str, httpx.Response] = {}

    def run(name: str) -> None:
        with rest_client(server.url, pki) as c:
            results[name] = sign(c, name.encode(), name)

    threads = [threading.Thread(target=run, args=(user,)) for user in users]
    for thread in threads:
        thread.start()

    def queued() -> bool:
        listing = json.loads(run_signpeer(home, "ra", "requests", "--json").stdout)["requests"]
        return [r["state"] for r in listing] == ["pending"] * len(users)

    wait_until(queued, timeout=30, what=f"{len(users)} requests pending in the RA queue")
    return threads, results


def test_ra_loop_takes_a_backlog_several_requests_per_claim_by_default(home: Path, pki: Any, ca_peer: Any,
                                                                       start_server: Any, tmp_path: Path) -> None:
    """``ra serve`` (and RALoop) claims up to DEFAULT_BATCH requests per poll: three requests queued
    while no CA peer polls are taken by one claim of a single poller, and all three signatures
    complete; ``--help`` says the default."""
    from signpeer_onetimecrypto.commands import DEFAULT_BATCH
    from signpeer_onetimecrypto.raclient import RALoop, ra_client

    assert DEFAULT_BATCH >= 3
    help_text = run_signpeer(tmp_path, "ra", "serve", "--help").stdout.decode()
    assert f"(default {DEFAULT_BATCH};" in " ".join(help_text.split())
    setup_ra(home, ca_peer, wait_timeout="30")
    server = start_server(home)
    users = ("alice", "bob", "carol")
    threads, results = queue_signatures(home, server, pki, users)
    client = ra_client(server.url, ca_peer.pem, ca_peer.key_pem, pki.ca_pem, max_connections=4)
    loop = RALoop(client, lambda req: issue_for_request(pki.ca_key, [pki.ca_cert], req), min_parallel=1,
                  max_parallel=1, wait=2.0)
    claimed: list[int] = []
    claim = loop._claim

    def counting(answers: Any) -> list[dict[str, Any]]:
        offers = claim(answers)
        if offers:
            claimed.append(len(offers))
        return offers

    loop._claim = counting  # type: ignore[method-assign]  # watches how many requests each claim took
    loop.start()
    try:
        for thread in threads:
            thread.join(40)
        assert all(results[u].status_code == 200 for u in users), [results[u].text for u in users]
        for user in users:
            verify(tmp_path, pki.ca_pem, base64.b64decode(results[user].json()["data"]), user.encode())
    finally:
        loop.close()
        client.close()
    assert claimed == [len(users)] and loop.stats.issued == len(users)


def test_a_claim_with_answers_that_found_nothing_is_offered_a_lease_that_runs_out(
        home: Path, pki: Any, ca_peer: Any, start_server: Any, tmp_path: Path) -> None:
    """A claim carrying answers claims once in the answers' trip; when that finds nothing it waits
    (no second look right away), and its timer's read still offers a request whose lease ran out
    meanwhile, as to any poll after its first claim."""
    from signpeer_core.keys import certificate_pem
    from signpeer_onetimecrypto.connectors import CertificateRequest
    from signpeer_onetimecrypto.raclient import ra_client

    setup_ra(home, ca_peer, wait_timeout="20")
    server = start_server(home)
    results: dict[str, httpx.Response] = {}

    def run() -> None:
        with rest_client(server.url, pki) as c:
            results["alice"] = sign(c, b"alice", "alice")

    signer = threading.Thread(target=run)
    signer.start()
    with ra_client(server.url, ca_peer.pem, ca_peer.key_pem, pki.ca_pem) as peer:
        first = peer.json("POST", "/ra/claim", json={"wait": 10, "lease": 1})["requests"][0]
        # Not answered: its 1 s lease runs out while this claim (with an answer to record) waits.
        again = peer.json("POST", "/ra/claim", json={"wait": 10, "lease": 1, "answers": [{"id": "nope", "error": "x"}]})
        assert again["answers"] == [{"id": "nope", "status": 404, "error": "no RA request 'nope'"}]
        assert [(r["id"], r["claims"]) for r in again["requests"]] == [(first["id"], 2)]
        chain = certificate_pem(issue_for_request(pki.ca_key, [pki.ca_cert], CertificateRequest.from_json(first)))
        done = peer.json("POST", "/ra/claim", json={"wait": 0, "answers": [{"id": first["id"], "chain": chain}]})
        assert done["answers"] == [{"id": first["id"], "state": "answered"}]
    signer.join(30)
    assert results["alice"].status_code == 200, results["alice"].text
    verify(tmp_path, pki.ca_pem, base64.b64decode(results["alice"].json()["data"]), b"alice")


def test_requests_over_max_waiting_are_shed_at_once_with_retry_after(home: Path, pki: Any, ca_peer: Any,
                                                                     start_server: Any) -> None:
    """MAX_WAITING=2: two requests wait for a CA peer that is not there; the third is answered 503
    with Retry-After at once, nothing made or queued for it; once the CA answers, requests are
    taken again."""
    setup_ra(home, ca_peer, wait_timeout="60")
    services = open_services(home)
    try:
        services.store.update_worker(2, {"MAX_WAITING": "2"})
        services.store.bump_config_generation()
    finally:
        services.close()
    server = start_server(home)

    def queued() -> list[Any]:
        return json.loads(run_signpeer(home, "ra", "requests", "--json").stdout)["requests"]

    with rest_client(server.url, pki) as client, concurrent.futures.ThreadPoolExecutor(2) as pool:
        waiting = [pool.submit(sign, client, f"waits {i}".encode(), f"user{i}") for i in range(2)]
        wait_until(lambda: len(queued()) == 2, what="two requests queued")
        started = time.monotonic()
        shed = sign(client, b"one too many", "carol")
        shed_after = time.monotonic() - started
        assert shed.status_code == 503, shed.text
        assert shed.headers["retry-after"] == "1"
        assert "MAX_WAITING=2" in shed.json()["error"] and "retry in 1 s" in shed.json()["error"], shed.text
        assert shed_after < 30, shed_after  # at once, not after CACONNECTOR_WAITTIMEOUT (60 s)
        assert len(queued()) == 2  # nothing queued for the shed request
        loop = ra_loop(server, ca_peer, pki)
        try:
            assert [f.result().status_code for f in waiting] == [200, 200]
            assert sign(client, b"taken again", "dave").status_code == 200
        finally:
            close_loop(loop)
    with httpx.Client(base_url=server.url, verify=client_context(pki.ca_pem, pki.admin.pair)) as admin:
        metrics = admin.get("/metrics")
    assert metrics.status_code == 200, metrics.text
    assert 'signpeer_onetime_shed_requests_total{worker="OneTimeRA"} 1.0' in metrics.text


def test_a_slow_issuer_starts_no_request_of_a_batch_late_in_its_lease(home: Path, pki: Any, ca_peer: Any,
                                                                        start_server: Any, tmp_path: Path) -> None:
    """A poller issues a claim's requests one after the other: with an issuer slower than half the
    lease, it starts no request past half of that claim's lease (another poller could be offered it
    once the lease runs out, and issue it twice); the ones left are offered again, and every
    signature completes with one certificate each."""
    from signpeer_onetimecrypto.raclient import LATE_IN_LEASE, RALoop, ra_client

    setup_ra(home, ca_peer, wait_timeout="60")
    server = start_server(home)
    users = ("alice", "bob", "carol")
    threads, results = queue_signatures(home, server, pki, users)
    lease = 1.0
    claims: list[tuple[float, list[str]]] = []  # when each claim came back, and what it offered
    started: list[tuple[float, str]] = []  # when each issuance began, for which request

    def slow_issuer(req: Any) -> Any:
        started.append((time.monotonic(), req.transaction_id))
        time.sleep(lease * 0.8)  # the issuer's own slowness (the scenario), not a wait for a condition
        return issue_for_request(pki.ca_key, [pki.ca_cert], req)

    client = ra_client(server.url, ca_peer.pem, ca_peer.key_pem, pki.ca_pem, max_connections=4)
    loop = RALoop(client, slow_issuer, min_parallel=1, max_parallel=1, wait=2.0, lease=lease)
    claim = loop._claim

    def recording(answers: Any) -> list[dict[str, Any]]:
        offers = claim(answers)
        if offers:
            claims.append((time.monotonic(), [str(o["transactionId"]) for o in offers]))
        return offers

    loop._claim = recording  # type: ignore[method-assign]  # watches what each claim offered, and when
    loop.start()
    try:
        for thread in threads:
            thread.join(60)
        assert all(results[u].status_code == 200 for u in users), [results[u].text for u in users]
    finally:
        loop.close()
        client.close()
    assert claims[0][1] and len(claims[0][1]) == len(users)  # the backlog in one claim, as by default
    for at, rid in started:  # each issuance began early in the lease of the claim that offered it last
        offered = [t for t, rids in claims if rid in rids and t <= at]
        assert offered and at - offered[-1] <= lease * LATE_IN_LEASE + 0.2, (rid, at - offered[-1])
    assert sorted(rid for _, rid in started) == sorted({rid for _, rid in started})  # none issued twice
    assert len(started) == len(users) and loop.stats.issued == len(users)

"""End to end over real TLS on loopback: ``signpeer serve`` in a subprocess, a CA peer with its
own client certificate, renewals checked with openssl.

Covers the issue's "done when": first ping refused and recorded; authorization through
``wspeersystems -add -cert`` and through ``peers authorize <id>``; the exact list of bindings
and their states; renewal with and without a new key; signatures from before and after
verified by openssl against the right certificates; every bad input with its clear error and
no change; a rule removed while a connection stays open.
"""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from signpeer_core import clientcas, devpki
from signpeer_core.certificates import decode_certificate_property
from signpeer_core.errors import AuthorizationError, BadRequestError, ConflictError, NotFoundError
from signpeer_core.issuing import IssuingCA
from signpeer_core.storage import Admin, AuditEvent
from signpeer_core.testing import PASSWORD, add_signer, client_context, open_services
from signpeer_core.testing import wait_until as shared_wait_until
from signpeer_peerconnector.client import PeerClient, PeerTLSError, PeerUnauthorized
from signpeer_peerconnector.incoming_store import IncomingPeers

PROCESS = "/signserver/rest/v1/workers/{}/process"
PEER = "/signserver/peer/v1"
REST_HEADERS = {"X-Keyfactor-Requested-With": "XMLHttpRequest"}  # the REST API's CSRF guard


# -- set-up ------------------------------------------------------------------------------------------

def _worker(services: Any, props: dict[str, str]) -> int:
    wid = services.store.next_worker_id()
    services.store.update_worker(wid, props, audit=[AuditEvent("SET_WORKER_CONFIG", "WORKER_CONFIG", Admin("tests"), wid)])
    return wid


def build_world(home: Path, pki: Any) -> dict[str, int]:
    """Workers covering every listing rule of spec §3.1 and every state of §3.2."""
    services = open_services(home)
    try:
        ids = {
            "Signer1": add_signer(services, pki, "Signer1", PEERS_VISIBLE="true", KEYALG="ECDSA", KEYSPEC="secp256r1",
                                  AUTHTYPE="NOAUTH"),
            "Disabled": add_signer(services, pki, "Disabled", implementation="CMSSigner", PEERS_VISIBLE="TRUE",
                                   DISABLED="true"),
            "Hidden": add_signer(services, pki, "Hidden"),
            "NotVisible": add_signer(services, pki, "NotVisible", PEERS_VISIBLE="false"),
            "NoKey": add_signer(services, pki, "NoKey", PEERS_VISIBLE="true"),
        }
        services.store.update_worker(ids["NoKey"], {"DEFAULTKEY": "missing"})
        ids["Crypto"] = _worker(services, {
            "NAME": "Crypto", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
            "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "SoftCryptoToken", "KEYSTORETYPE": "INTERNAL",
            "KEYSTOREPASSWORD": PASSWORD, "PEERS_VISIBLE": "true"})
        services.runtime.load()
        token = services.runtime.get("Crypto").token
        token.generate_key("shared1", "ECDSA", "secp256r1")
        cert = pki.issue_signer(token.public_key("shared1"), "CN=UsesCrypto, O=signpeer tests")
        from signpeer_core.certificates import encode_certificate_property

        ids["UsesCrypto"] = _worker(services, {
            "NAME": "UsesCrypto", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "PlainSigner",
            "CRYPTOTOKEN": "Crypto", "DEFAULTKEY": "shared1", "PEERS_VISIBLE": "true",
            "SIGNERCERTCHAIN": encode_certificate_property([cert, pki.ca_cert])})
        ids["NoToken"] = _worker(services, {"NAME": "NoToken", "TYPE": "PROCESSABLE",
                                            "IMPLEMENTATION_CLASS": "PlainSigner", "DEFAULTKEY": "k",
                                            "PEERS_VISIBLE": "true"})
    finally:
        services.close()
    return ids


def allow_incoming(signpeer: Any, value: str = "true") -> None:
    code, out, err = signpeer("setproperty", "global", "PEERS_INCOMING_ENABLED", value)
    assert code == 0, err
    code, out, err = signpeer("reload", "all")
    assert code == 0, err


def wait_until(check: Any, timeout: float = 60.0) -> Any:
    """The test kit's ``wait_until``; a failing call (the server not there yet) counts as "not yet"."""
    return shared_wait_until(check, timeout, retry_on=(Exception,))


def add_reload_marker(signpeer: Any) -> str:
    """Stage a marker worker; once the server lists it, every change staged with it is live."""
    name = f"ReloadMarker{next(_MARKERS)}"
    code, _, err = signpeer("setproperty", str(9000 + int(name[12:])), "NAME", name)
    assert code == 0, err
    return name


def wait_for_marker(rest: httpx.Client, name: str) -> None:
    wait_until(lambda: name in {w["name"] for w in rest.get("/signserver/rest/v1/workers").json()["workers"]})


_MARKERS = itertools.count(1)


def openssl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], capture_output=True, timeout=30)


def sign_and_verify(client: httpx.Client, worker: str, payload: bytes, tmp: Path, tag: str) -> x509.Certificate:
    """Sign through the REST API; verify the signature with openssl against the returned certificate."""
    r = client.post(PROCESS.format(worker), json={"data": base64.b64encode(payload).decode(), "encoding": "BASE64"})
    assert r.status_code == 200, r.text
    answer = r.json()
    cert = x509.load_der_x509_certificate(base64.b64decode(answer["signerCertificate"]))
    (tmp / f"{tag}.data").write_bytes(payload)
    (tmp / f"{tag}.sig").write_bytes(base64.b64decode(answer["data"]))
    (tmp / f"{tag}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / f"{tag}.pub").write_bytes(cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    ok = openssl("dgst", "-sha256", "-verify", str(tmp / f"{tag}.pub"), "-signature", str(tmp / f"{tag}.sig"),
                 str(tmp / f"{tag}.data"))
    assert ok.returncode == 0 and b"Verified OK" in ok.stdout, ok.stderr
    return cert


def verify_with(cert_path: Path, tmp: Path, tag: str) -> bool:
    """Does the signature ``tag`` verify against the certificate at ``cert_path``?"""
    pub = tmp / f"{tag}-against.pub"
    out = openssl("x509", "-in", str(cert_path), "-pubkey", "-noout")
    pub.write_bytes(out.stdout)
    r = openssl("dgst", "-sha256", "-verify", str(pub), "-signature", str(tmp / f"{tag}.sig"), str(tmp / f"{tag}.data"))
    return r.returncode == 0


@pytest.fixture
def world(home: Path, pki: Any) -> dict[str, int]:
    return build_world(home, pki)


@pytest.fixture
def server(world: dict[str, int], home: Path, start_server: Any) -> Any:
    return start_server(home)


@pytest.fixture
def ca_client(server: Any, peer: Any, pki: Any) -> Any:
    with PeerClient(server.url, peer.pem, peer.key_pem, pki.ca_pem) as client:
        yield client


@pytest.fixture
def authorized(ca_client: PeerClient, peer: Any, signpeer: Any) -> PeerClient:
    """Incoming allowed and the peer authorized with ``wspeersystems -add -cert``."""
    code, out, err = signpeer("wspeersystems", "-add", "-cert", str(peer.pem))
    assert (code, out.strip()) == (0, "Rule added"), err
    allow_incoming(signpeer)
    wait_until(lambda: ca_client.ping())
    return ca_client


@pytest.fixture
def rest(server: Any, pki: Any) -> Any:
    # The administrator's certificate: the worker list (wait_for_marker) is for administrators.
    with httpx.Client(base_url=server.url, verify=client_context(pki.ca_pem, pki.admin.pair),
                      headers=REST_HEADERS) as client:
        yield client


# -- authorization and the incoming registry ---------------------------------------------------------

def test_first_ping_refused_recorded_then_authorized_from_the_registry(
        ca_client: PeerClient, server: Any, peer: Any, signpeer: Any, pki: Any, rest: httpx.Client) -> None:
    with pytest.raises(PeerUnauthorized) as refused:
        ca_client.ping()
    assert "Unauthorized" in refused.value.message
    serial, issuer = format(peer.cert.serial_number, "x"), "CN=signpeer test CA, O=signpeer tests"
    assert f"Denied peer access to {serial} issuer: '{issuer}'" in wait_until(
        lambda: "Denied peer access" in server.log() and server.log())

    # the raw answer: 403, JSON, "Unauthorized" in the error
    with httpx.Client(verify=client_context(pki.ca_pem, peer.pair)) as raw:
        r = raw.get(server.url + PEER + "/ping")
    assert r.status_code == 403 and "Unauthorized" in r.json()["error"]

    code, out, _ = signpeer("peers", "incoming", "--json")
    rows = json.loads(out)["incoming"]
    assert len(rows) == 1
    row = rows[0]
    assert (row["subject"], row["issuer"], row["serial"], row["remoteAddress"], row["authorized"]) == (
        "CN=EJBCA Peer Connector, OU=Peers, O=signpeer tests", issuer, serial, "127.0.0.1", False)
    assert row["count"] >= 1
    code, out, _ = signpeer("peers", "incoming")
    assert "No" in out.splitlines()[-1] and "not allowed" in out

    # a rule alone is not enough: incoming connections must be allowed too (and the reverse)
    marker = add_reload_marker(signpeer)
    code, out, err = signpeer("peers", "authorize", str(row["id"]))
    assert code == 0 and out.startswith("Rule added") and "still not allowed" in out, err
    wait_for_marker(rest, marker)  # the rule is live in the server now
    with pytest.raises(PeerUnauthorized):
        ca_client.ping()
    allow_incoming(signpeer)
    answer = wait_until(lambda: ca_client.ping())
    assert answer["peer"]["serial"] == serial and answer["version"] == "v1"

    code, out, _ = signpeer("peers", "incoming")
    assert out.splitlines()[-1].rstrip().endswith("Yes")
    code, out, _ = signpeer("peers", "authorize", str(row["id"]))
    assert out.startswith("Rule already exists")
    code, out, _ = signpeer("wspeersystems", "-list")
    assert f"{serial:<20} {issuer}" in out

    services = open_services(server.home)
    try:
        events = services.store.audit_events(event="SET_GLOBAL_PROPERTY")
        assert any(e.details.get("GLOBALCONFIG_PROPERTY") == "GLOB.WSPEERS" for e in events)
        wait_until(lambda: IncomingPeers(services.store.database).all()[0].count >= 4)
    finally:
        services.close()
    code, out, _ = signpeer("peers", "clear", str(row["id"]))
    assert code == 0 and "Cleared" in out
    code, out, err = signpeer("peers", "clear", str(row["id"]))
    assert code != 0 and "no incoming connection" in err

    # In the audit log: the refused peer (once per peer and path a minute, though it was refused
    # more often) and who cleared the incoming connection.
    services = open_services(server.home)
    try:
        denied = services.store.audit_events(event="ACCESS_CONTROL")
        assert [(e.module, e.outcome, e.admin.serial, e.details["RESOURCE"]) for e in denied] == [
            ("PEERS", "FAILURE", serial, PEER + "/ping")]
        assert denied[0].details["REASON"] == "incoming peer connections are not allowed"
        cleared = services.store.audit_events(event="INCOMING_PEER_CLEARED")
        assert [(e.module, e.details["ID"], e.details["SERIAL"]) for e in cleared] == [
            ("PEERS", str(row["id"]), serial)]
        assert cleared[0].admin.name.startswith("CLI user")
    finally:
        services.close()


def test_wspeersystems_messages_and_exit_codes(home: Path, signpeer: Any, peer: Any, pki: Any) -> None:
    serial = format(peer.cert.serial_number, "x")
    issuer = "CN=signpeer test CA, O=signpeer tests"
    assert signpeer("wspeersystems")[0] == 255
    assert signpeer("wspeersystems")[2].strip() == "Missing operation: -add, -remove or -list"
    assert signpeer("wspeersystems", "-add", "-certserialno", serial)[2].strip() == "Missing option: -issuerdn"
    assert signpeer("wspeersystems", "-add", "-issuerdn", issuer)[2].strip() == "Missing option: -certserialno"
    code, _, err = signpeer("wspeersystems", "-add", "-cert", str(peer.pem), "-certserialno", serial)
    assert (code, err.strip()) == (255, "Can't use the option -cert at the same time as -certserialno and -issuerdn")
    code, _, err = signpeer("wspeersystems", "-add", "-certserialno", "xyz", "-issuerdn", issuer)
    assert (code, err.strip()) == (255, "Illegal serial number specified: xyz")

    assert signpeer("wspeersystems", "-add", "-certserialno", serial.upper(), "-issuerdn", issuer)[1] == "Rule added\n"
    assert signpeer("wspeersystems", "-add", "-cert", str(peer.pem))[1] == "Rule already exists\n"
    code, out, _ = signpeer("wspeersystems", "-list")
    # The rule's issuer is bound to the key of the client CA that issued the peer's certificate.
    assert out == f"Authorizations:\n{serial:<20} {issuer}   (issuer key {clientcas.key_id(pki.ca_cert)})\n\n"
    # -remove takes serial + issuer only; with -cert nothing matches (SignServer's behaviour)
    code, out, err = signpeer("wspeersystems", "-remove", "-cert", str(peer.pem))
    assert (code, err.strip()) == (0, "No such rule")
    assert signpeer("wspeersystems", "-remove", "-certserialno", serial, "-issuerdn", issuer)[1] == "Rule removed\n"
    code, out, err = signpeer("wspeersystems", "-remove", "-certserialno", serial, "-issuerdn", issuer)
    assert (code, out, err.strip()) == (0, "", "No such rule")
    # the issuer is compared exactly: another spelling is another rule
    signpeer("wspeersystems", "-add", "-certserialno", serial, "-issuerdn", "CN=signpeer test CA,O=signpeer tests")
    services = open_services(home)
    try:
        assert services.store.global_properties()["GLOB.WSPEERS"] == f"{serial},CN=signpeer test CA,O=signpeer tests;"
    finally:
        services.close()


def test_admin_settings_do_not_grant_peer_access(ca_client: PeerClient, signpeer: Any, peer: Any, pki: Any,
                                                 rest: httpx.Client) -> None:
    allow_incoming(signpeer)
    code, _, err = signpeer("setproperty", "global", "ALLOWANYWSADMIN", "true")
    assert code == 0, err
    assert signpeer("wsadmins", "-add", "-cert", str(peer.pem))[0] == 0
    marker = add_reload_marker(signpeer)
    signpeer("reload", "all")
    wait_for_marker(rest, marker)  # the admin settings are live in the server now
    with pytest.raises(PeerUnauthorized):
        ca_client.ping()


# -- key bindings --------------------------------------------------------------------------------------

def test_list_holds_exactly_the_right_bindings(authorized: PeerClient, world: dict[str, int]) -> None:
    bindings = {b["name"]: b for b in authorized.list_bindings()}
    assert set(bindings) == {"Signer1", "Disabled", "NoKey", "UsesCrypto"}
    assert [b["id"] for b in authorized.list_bindings()] == sorted(b["id"] for b in bindings.values())
    s1 = bindings["Signer1"]
    assert (s1["id"], s1["status"], s1["operationalStatus"], s1["keyPairAlias"], s1["nextKeyPairAlias"]) == (
        world["Signer1"], "ACTIVE", "ONLINE", "signer00001", None)
    assert s1["signatureAlgorithm"] == "SHA512withECDSA"  # spec §2.2 from the EC certificate
    assert s1["certificate"]["subject"] == "CN=Signer1, O=signpeer tests"
    assert s1["certificate"]["issuer"] == "CN=signpeer test CA, O=signpeer tests"
    assert s1["certificateId"] is None and s1["peersIssued"] is False  # PEERS_ISSUED not set
    assert (bindings["Disabled"]["status"], bindings["Disabled"]["operationalStatus"]) == ("DISABLED", "ONLINE")
    no_key = bindings["NoKey"]
    assert (no_key["status"], no_key["operationalStatus"]) == ("ACTIVE", "OFFLINE")
    assert "missing" in no_key["offlineReasons"][0]
    assert bindings["UsesCrypto"]["cryptoToken"] == "Crypto"
    assert bindings["UsesCrypto"]["operationalStatus"] == "ONLINE"
    assert authorized.get_binding("Signer1") == s1
    assert authorized.get_binding(world["Signer1"]) == s1


def test_the_listing_comes_in_pages_that_the_client_follows(
        authorized: PeerClient, world: dict[str, int], peer: Any, pki: Any) -> None:
    everything = authorized.list_bindings()
    assert len(everything) == 4
    assert authorized.list_bindings(page_size=1) == everything  # four pages, followed by the client
    ids = [b["id"] for b in everything]
    with httpx.Client(base_url=authorized.base_url, verify=client_context(pki.ca_pem, peer.pair)) as raw:
        first = raw.get("/keybindings", params={"limit": "3"}).json()
        assert [b["id"] for b in first["keyBindings"]] == ids[:3] and first["nextCursor"] == str(ids[2])
        last = raw.get("/keybindings", params={"limit": "3", "after": first["nextCursor"]}).json()
        assert [b["id"] for b in last["keyBindings"]] == ids[3:] and "nextCursor" not in last
        assert "nextCursor" not in raw.get("/keybindings").json()  # all four fit the default page
        # A cursor between two bindings (the id of a hidden worker) starts after it.
        assert ids[2] > ids[1] + 1 == world["Hidden"]
        assert raw.get("/keybindings", params={"after": str(ids[1] + 1)}).json()["keyBindings"][0]["id"] == ids[2]
        for query, message in [({"limit": "0"}, "limit '0' must be a number from 1 to 1000"),
                               ({"limit": "1001"}, "from 1 to 1000"), ({"limit": "ten"}, "from 1 to 1000"),
                               ({"after": "Signer1"}, "after 'Signer1' is not a cursor")]:
            r = raw.get("/keybindings", params=query)
            assert r.status_code == 400 and message in r.json()["error"], (query, r.text)


def test_set_status_maps_to_disabled(authorized: PeerClient, rest: httpx.Client, home: Path) -> None:
    assert authorized.set_status("Signer1", "DISABLED")["status"] == "DISABLED"
    r = rest.post(PROCESS.format("Signer1"), json={"data": "x"})
    assert r.status_code == 503, r.text
    assert authorized.set_status("Signer1", "active")["status"] == "ACTIVE"
    assert rest.post(PROCESS.format("Signer1"), json={"data": "x"}).status_code == 200
    with pytest.raises(BadRequestError) as bad:
        authorized.set_status("Signer1", "PAUSED")
    assert bad.value.status == 400 and "ACTIVE or DISABLED" in bad.value.message


def test_a_peer_re_enables_only_what_a_peer_disabled(authorized: PeerClient, rest: httpx.Client,
                                                     signpeer: Any) -> None:
    # An administrator disables the worker: recorded as theirs, and a peer cannot undo it.
    assert signpeer("setproperty", "Signer1", "DISABLED", "true").code == 0
    assert signpeer("reload", "Signer1").code == 0
    wait_until(lambda: authorized.get_binding("Signer1")["status"] == "DISABLED")
    code, out, _ = signpeer("getproperty", "Signer1", "DISABLED_BY")
    assert code == 0 and "ADMIN:" in out, out
    with pytest.raises(AuthorizationError) as refused:
        authorized.set_status("Signer1", "ACTIVE")
    assert refused.value.status == 403 and "not by a peer system" in refused.value.message
    assert authorized.get_binding("Signer1")["status"] == "DISABLED"
    assert rest.post(PROCESS.format("Signer1"), json={"data": "x"}).status_code == 503
    # The administrator enables it again: the record goes with DISABLED.
    assert signpeer("removeproperty", "Signer1", "DISABLED").code == 0
    assert signpeer("reload", "Signer1").code == 0
    wait_until(lambda: authorized.get_binding("Signer1")["status"] == "ACTIVE")
    code, out, _ = signpeer("getconfig", "Signer1")
    assert "DISABLED_BY" not in out, out
    # What a peer disabled, a peer may enable.
    assert authorized.set_status("Signer1", "DISABLED")["status"] == "DISABLED"
    code, out, _ = signpeer("getproperty", "Signer1", "DISABLED_BY")
    assert "PEER:" in out, out
    assert authorized.set_status("Signer1", "ACTIVE")["status"] == "ACTIVE"
    assert rest.post(PROCESS.format("Signer1"), json={"data": "x"}).status_code == 200


# -- renewal ----------------------------------------------------------------------------------------

def test_renewal_without_and_with_new_key(
        authorized: PeerClient, rest: httpx.Client, issuing_ca: Any, tmp_path: Path, home: Path,
        peer: Any, signpeer: Any, pki: Any) -> None:
    ca_pem, ca_key_pem, _, ca_cert = issuing_ca
    payload = b"signed before, between and after the renewals"
    old = sign_and_verify(rest, "Signer1", payload, tmp_path, "before")

    # 1. renew without a new key, with the connector command (the CA side as an operator runs it)
    code, out, err = signpeer("connector", "renew", authorized.base_url, "Signer1", "--cert", str(peer.pem),
                              "--key", str(peer.key_pem), "--cacert", str(pki.ca_pem), "--issuer-cert", str(ca_pem),
                              "--issuer-key", str(ca_key_pem), "--validity-days", "30")
    assert code == 0, err
    assert out.startswith("Renewed Signer1: key signer00001,")
    b = authorized.get_binding("Signer1")
    assert b["keyPairAlias"] == "signer00001" and b["certificate"]["issuer"] == "CN=Signer Issuing CA, O=signpeer tests, C=SE"
    middle = sign_and_verify(rest, "Signer1", payload, tmp_path, "middle")
    assert middle.issuer == ca_cert.subject and middle.public_key() == old.public_key()
    assert b["certificateId"] == middle.fingerprint(hashes.SHA1()).hex() and b["peersIssued"] is True
    (tmp_path / "issuing.pem").write_bytes(ca_pem.read_bytes())
    assert openssl("verify", "-CAfile", str(ca_pem), str(tmp_path / "middle.crt")).returncode == 0

    # 2. renew with a new key through the Python API
    ca = IssuingCA.from_files(ca_pem, ca_key_pem)
    from signpeer_peerconnector.client import renew

    result = renew(authorized, ca, "Signer1", rekey=True)
    assert result.ok, result.error
    assert (result.key_alias, result.promoted) == ("signer00002", True)
    b = authorized.get_binding("Signer1")
    assert (b["keyPairAlias"], b["nextKeyPairAlias"], b["operationalStatus"]) == ("signer00002", None, "ONLINE")
    after = sign_and_verify(rest, "Signer1", payload, tmp_path, "after")
    assert after.public_key() != old.public_key()
    assert after.serial_number == result.certificate.serial_number

    # each signature verifies against its own certificate and not against the others
    assert verify_with(tmp_path / "before.crt", tmp_path, "before")
    assert verify_with(tmp_path / "middle.crt", tmp_path, "before")  # same key
    assert not verify_with(tmp_path / "after.crt", tmp_path, "before")
    assert not verify_with(tmp_path / "before.crt", tmp_path, "after")

    services = open_services(home)
    try:
        props = services.store.worker_properties(b["id"])
        assert props["PEERS_ISSUED"] == "true" and props["DEFAULTKEY"] == "signer00002"
        assert "NEXTCERTSIGNKEY" not in props
        chain = decode_certificate_property(props["SIGNERCERTCHAIN"])
        assert [c.subject for c in chain] == [after.subject, ca_cert.subject]
        by_peer = services.store.audit_events(admin="EJBCA Peer Connector", worker_id=b["id"])
        kinds = {e.event for e in by_peer}
        assert {"KEYGEN", "KEYTEST", "GENCSR", "CERTINSTALLED", "CERTCHAININSTALLED", "KEYSELECTED",
                "SET_WORKER_CONFIG", "RELOAD_WORKER_CONFIG"} <= kinds
        e = by_peer[0]
        assert (e.admin.issuer, e.admin.serial) == ("CN=signpeer test CA, O=signpeer tests",
                                                    format(peer.cert.serial_number, "x"))
    finally:
        services.close()


def test_next_key_is_reused_unless_replaced(authorized: PeerClient) -> None:
    first = authorized.next_key("Signer1")
    assert first["created"] and first["nextKeyPairAlias"] == "signer00002"
    again = authorized.next_key("Signer1")
    assert (again["created"], again["nextKeyPairAlias"], again["publicKey"]) == (False, "signer00002",
                                                                                 first["publicKey"])
    replaced = authorized.next_key("Signer1", replace=True)
    assert replaced["created"] and replaced["nextKeyPairAlias"] == "signer00003"
    # KEYALG/KEYSPEC of the worker: EC P-256
    next_public = serialization.load_pem_public_key(replaced["publicKey"].encode())
    assert isinstance(next_public, ec.EllipticCurvePublicKey) and next_public.curve.name == "secp256r1"
    csr, answer = authorized.csr("Signer1")
    assert (answer["keyPairAlias"], answer["forNextKey"], answer["subjectDn"]) == ("signer00003", True, "CN=signer00003")
    assert csr.is_signature_valid and answer["signatureAlgorithm"] == "SHA512withECDSA"


def test_operations_from_several_threads_share_a_few_kept_connections(authorized: PeerClient) -> None:
    """The operations run on a pool of kept-alive connections (HttpClient.call): one per thread in flight, reused,
    never more than ``max_connections``; a name is sent as one path segment."""
    import concurrent.futures

    made = []
    connection = authorized._http.connection

    def counted() -> Any:
        made.append(1)
        return connection()

    authorized._http.connection = counted  # type: ignore[method-assign]
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            names = list(pool.map(lambda _: authorized.get_binding("Signer1")["name"], range(40)))
    finally:
        del authorized._http.connection
    assert names == ["Signer1"] * 40
    assert 1 <= len(made) <= 4 and len(authorized._http._kept) == len(made)
    with pytest.raises(NotFoundError) as exc:
        authorized.get_binding("no such/worker ?")
    assert exc.value.status == 404


def test_signing_never_fails_while_the_key_switches(
        authorized: PeerClient, server: Any, pki: Any, issuing_ca: Any) -> None:
    ca = IssuingCA.from_files(issuing_ca[0], issuing_ca[1])
    from signpeer_peerconnector.client import renew

    failures: list[str] = []
    signed = 0
    stop = threading.Event()

    def hammer() -> None:
        nonlocal signed
        with httpx.Client(base_url=server.url, verify=client_context(pki.ca_pem), headers=REST_HEADERS) as c:
            while not stop.is_set():
                r = c.post(PROCESS.format("Signer1"), json={"data": "during"})
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")
                else:
                    signed += 1

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            result = renew(authorized, ca, "Signer1", rekey=True)
            assert result.ok, result.error
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == [] and signed > 10
    assert authorized.get_binding("Signer1")["keyPairAlias"] == "signer00004"


# -- bad inputs: clear errors, nothing changes ---------------------------------------------------------

def _stored(home: Path, wid: int) -> dict[str, str]:
    services = open_services(home)
    try:
        return services.store.worker_properties(wid)
    finally:
        services.close()


def test_bad_inputs_get_clear_errors_and_change_nothing(
        authorized: PeerClient, world: dict[str, int], home: Path, issuing_ca: Any, server: Any,
        peer: Any, pki: Any) -> None:
    before = _stored(home, world["Signer1"])
    with pytest.raises(NotFoundError) as unknown:
        authorized.get_binding("NoSuchWorker")
    assert unknown.value.status == 404 and "no key binding 'NoSuchWorker'" in unknown.value.message
    with pytest.raises(NotFoundError) as hidden:
        authorized.csr("Hidden")
    assert hidden.value.status == 404

    # a certificate for another key
    other = devpki.new_key()
    foreign = devpki.issue(issuing_ca[2], issuing_ca[3], "CN=Signer1", other.public_key())
    with pytest.raises(ConflictError) as conflict:
        authorized.install("Signer1", [foreign, issuing_ca[3]])
    assert conflict.value.status == 409 and "does not match the current or next key" in conflict.value.message

    with httpx.Client(base_url=authorized.base_url, verify=client_context(pki.ca_pem, peer.pair)) as raw:
        r = raw.post("/keybindings/Signer1/certificate", content=b"-----BEGIN CERTIFICATE-----\nnot base64!\n"
                     b"-----END CERTIFICATE-----\n", headers={"Content-Type": "application/pem-certificate-chain"})
        assert r.status_code == 400 and "not a PEM or DER certificate" in r.json()["error"]
        r = raw.post("/keybindings/Signer1/certificate", json={"certificateChain": "garbage"})
        assert r.status_code == 400, r.text
        r = raw.post("/keybindings/Signer1/nextkey", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
        r = raw.post("/keybindings/Signer1/nextkey", json={"replace": "yes"})
        assert r.status_code == 400
        r = raw.get(server.url + "/signserver/peer/v2/ping")
        assert r.status_code == 400 and "unsupported peer protocol version 'v2'" in r.json()["error"]
        r = raw.get("/nosuchop")
        assert r.status_code == 404
        r = raw.get("/openapi.json")
        assert r.status_code == 200 and "/keybindings/{binding}/certificate" in r.json()["paths"]
    # no client certificate at all
    with httpx.Client(verify=client_context(pki.ca_pem)) as anonymous:
        r = anonymous.get(authorized.base_url + "/ping")
        assert r.status_code == 401 and "Unauthorized" in r.json()["error"]
    assert _stored(home, world["Signer1"]) == before


def test_expired_and_untrusted_client_certificates_fail_the_handshake(
        authorized: PeerClient, server: Any, pki: Any, tmp_path: Path, signpeer: Any) -> None:
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    expired = pki.issue_client("Expired Peer", not_before=now - dt.timedelta(days=10),
                               not_after=now - dt.timedelta(days=1))
    signpeer("wspeersystems", "-add", "-cert", str(expired.pem))
    # the connector says so before connecting ...
    with pytest.raises(PeerTLSError) as exc:
        PeerClient(server.url, expired.pem, expired.key_pem, pki.ca_pem)
    assert "expired on" in exc.value.message
    # ... and the server really refuses it in the handshake (curl as the independent client)
    r = subprocess.run(["curl", "-sS", "--cacert", str(pki.ca_pem), "--cert", str(expired.pem), "--key",
                        str(expired.key_pem), server.url + PEER + "/ping"], capture_output=True, timeout=30)
    assert r.returncode != 0 and b"Unauthorized" not in r.stdout and b"pong" not in r.stdout

    other_key, other_ca = devpki.make_ca("CN=Untrusted CA")
    key = devpki.new_key()
    cert = devpki.issue(other_key, other_ca, "CN=Rogue Peer", key.public_key(), profile="client")
    devpki.write_public(tmp_path / "rogue.pem", devpki.cert_pem(cert))
    devpki.write_private(tmp_path / "rogue-key.pem", devpki.key_pem(key))
    with PeerClient(server.url, tmp_path / "rogue.pem", tmp_path / "rogue-key.pem", pki.ca_pem) as client, \
            pytest.raises(PeerTLSError) as exc:
        client.ping()
    assert "closed the connection right after the handshake" in exc.value.message
    # the operations' own kept-alive connections (http.client) say the same as httpx's
    with PeerClient(server.url, tmp_path / "rogue.pem", tmp_path / "rogue-key.pem", pki.ca_pem) as client, \
            pytest.raises(PeerTLSError) as kept:
        client.next_key("Signer1")
    assert kept.value.message == exc.value.message

    # and the other direction: the connector does not trust the server
    with PeerClient(server.url, authorized_pem(pki), authorized_key(pki), tmp_path / "rogue.pem") as client, \
            pytest.raises(PeerTLSError) as exc:
        client.ping()
    assert "not trusted" in exc.value.message and "--cacert" in exc.value.message
    with PeerClient(server.url, authorized_pem(pki), authorized_key(pki), tmp_path / "rogue.pem") as client, \
            pytest.raises(PeerTLSError) as kept:
        client.csr("Signer1")
    assert kept.value.message == exc.value.message


def authorized_pem(pki: Any) -> Path:
    return pki.client.pem


def authorized_key(pki: Any) -> Path:
    return pki.client.key_pem


def test_unreachable_server_is_named(peer: Any, pki: Any, signpeer: Any) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = signpeer("connector", "ping", f"https://127.0.0.1:{port}", "--cert", str(peer.pem),
                            "--key", str(peer.key_pem), "--cacert", str(pki.ca_pem))
    assert code == 5 and "cannot connect to" in err and "Is signpeer serve running" in err


def test_peers_disabled_refuses_authorized_peer(authorized: PeerClient, signpeer: Any) -> None:
    allow_incoming(signpeer, "false")

    def ping_refused() -> bool:
        try:
            authorized.ping()
        except PeerUnauthorized:
            return True
        return False

    wait_until(ping_refused)  # once the server has reloaded
    with pytest.raises(PeerUnauthorized) as refused:
        authorized.list_bindings()
    assert "Unauthorized" in refused.value.message


def test_rule_removed_while_the_connection_stays_open(
        server: Any, peer: Any, pki: Any, signpeer: Any) -> None:
    signpeer("wspeersystems", "-add", "-cert", str(peer.pem))
    allow_incoming(signpeer)
    with httpx.Client(base_url=server.url + PEER, verify=client_context(pki.ca_pem, peer.pair),
                      # httpx drops a connection idle for 5 s by default; the CLI below may take longer
                      # (a loaded machine, PostgreSQL): keep it for as long as the server does (75 s).
                      limits=httpx.Limits(max_connections=1, keepalive_expiry=75)) as client:
        r = wait_until(lambda: (lambda r: r if r.status_code == 200 else None)(client.get("/ping")))
        port = r.extensions["network_stream"].get_extra_info("client_addr")[1]
        serial = format(peer.cert.serial_number, "x")
        code, out, _ = signpeer("wspeersystems", "-remove", "-certserialno", serial,
                                "-issuerdn", "CN=signpeer test CA, O=signpeer tests")
        assert out == "Rule removed\n"
        refused = wait_until(lambda: (lambda r: r if r.status_code == 403 else None)(client.get("/ping")))
        assert "Unauthorized" in refused.json()["error"]
        # the same TLS connection carried the accepted and the refused call
        assert refused.extensions["network_stream"].get_extra_info("client_addr")[1] == port


def test_renew_all_from_a_config_file(
        authorized: PeerClient, issuing_ca: Any, peer: Any, pki: Any, signpeer: Any, tmp_path: Path,
        world: dict[str, int]) -> None:
    config = tmp_path / "connector.toml"
    config.write_text(f"""
[connector]
url = "{authorized.base_url}"
cert = "{peer.pem}"
key = "{peer.key_pem}"
cacert = "{pki.ca_pem}"

[issuer]
cert = "{issuing_ca[0]}"
key = "{issuing_ca[1]}"
validity_days = 10
""")
    code, out, err = signpeer("connector", "renew-all", "--config", str(config), "--rekey")
    assert code == 0, err
    lines = out.splitlines()
    # Signer1 and UsesCrypto renewed; Disabled and NoKey skipped with their reasons
    assert sorted(line.split("] ")[1].split(":")[0] for line in lines if line.startswith("[")) == ["Signer1",
                                                                                                   "UsesCrypto"]
    assert any(line.startswith("skipped Disabled: disabled") for line in lines)
    assert any(line.startswith("skipped NoKey: offline") for line in lines)
    assert lines[-1].startswith("Summary: 2 renewed, 0 failed, 2 skipped")
    # certificates now expire within 10 days: --expiring-within 5 skips them, 30 renews them again
    code, out, _ = signpeer("connector", "renew-all", "--config", str(config), "--expiring-within", "5")
    assert "Summary: 0 renewed, 0 failed, 4 skipped" in out
    code, out, _ = signpeer("connector", "renew-all", "--config", str(config), "--expiring-within", "30")
    assert "Summary: 2 renewed" in out
    b = authorized.get_binding("UsesCrypto")
    assert b["keyPairAlias"] == "shared2" and b["peersIssued"] is True
    code, out, _ = signpeer("connector", "list", "--config", str(config))
    assert code == 0 and "UsesCrypto" in out and "Signer1" in out

"""AUTHTYPE: NOAUTH, CLIENTCERT (authorized clients) and USERNAME (HTTP Basic), unit and over TLS."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from signpeer_core.auth import (
    AuthorizedClient,
    BasicAuthRequired,
    ClientCertAuthorizer,
    UsernameAuthorizer,
    build_authorizer,
    hash_password,
    parse_authorized_clients,
    serialize_authorized_clients,
    verify_password,
)
from signpeer_core.config import WorkerConfig
from signpeer_core.errors import (
    AuthenticationError,
    AuthorizationError,
    BadRequestError,
    ConfigurationError,
)
from signpeer_core.identity import CertificateIdentity
from signpeer_core.testing import PKI, add_signer, run_signpeer, wait_until
from signpeer_core.workers import SignRequest

PROCESS = "/signserver/rest/v1/workers/{}/process"
ISSUER = "CN=signpeer test CA, O=signpeer tests"


def req(**kw) -> SignRequest:
    return SignRequest(data=b"x", request_id="1", **kw)


# -- unit: rules and passwords --------------------------------------------------------------------

def test_password_hash_format_and_verification() -> None:
    stored = hash_password("s3cret")
    parts = stored.split("$")
    assert parts[:4] == ["scrypt", str(2**14), "8", "1"] and len(parts) == 6
    assert hash_password("s3cret") != stored  # salted
    assert verify_password(stored, "s3cret")
    assert not verify_password(stored, "s3cret ")
    assert not verify_password("scrypt$garbage", "x")


def test_signserver_password_forms_are_accepted() -> None:
    assert verify_password("foo123", "foo123") and not verify_password("foo123", "foo")
    sha1 = hashlib.sha1(b"foo123").hexdigest()
    assert verify_password(f"{sha1}:SHA1", "foo123")
    salted = hashlib.sha256(b"foo123" + b"salty").hexdigest().upper()
    assert verify_password(f"{salted}:SHA-256:salty", "foo123")
    assert not verify_password(f"{salted}:SHA-256:salty", "foo1234")


def test_rule_validation() -> None:
    with pytest.raises(BadRequestError, match="subject match type"):
        AuthorizedClient.create("SUBJECT_RDN_XX", "a", ISSUER)
    with pytest.raises(BadRequestError, match="issuer match type"):
        AuthorizedClient.create("SUBJECT_RDN_CN", "a", ISSUER, "ISSUER_DN_FOO")
    with pytest.raises(BadRequestError, match="serial"):
        AuthorizedClient.create("CERTIFICATE_SERIALNO", "xyz", ISSUER)
    with pytest.raises(BadRequestError):
        AuthorizedClient.create("SUBJECT_RDN_CN", "a", "not a dn")
    assert AuthorizedClient.create("CERTIFICATE_SERIALNO", "0x00AB:CD", ISSUER).matchSubjectWithValue == "abcd"
    with pytest.raises(ConfigurationError, match="authorizedclients"):
        parse_authorized_clients("{not json")
    with pytest.raises(ConfigurationError):
        parse_authorized_clients(json.dumps([{"matchSubjectWithType": "SUBJECT_RDN_CN"}]))


@pytest.mark.parametrize("subject_type, value, ok", [
    ("SUBJECT_RDN_CN", "client1", True),
    ("SUBJECT_RDN_CN", "CLIENT1", True),
    ("SUBJECT_RDN_CN", "client2", False),
    ("SUBJECT_RDN_OU", "builds", True),
    ("SUBJECT_RDN_O", "signpeer tests", True),
    ("SUBJECT_RDN_O", "other", False),
    ("SUBJECT_RDN_UID", "u1", False),
])
def test_client_cert_rules_by_subject(pki: PKI, subject_type: str, value: str, ok: bool) -> None:
    rule = AuthorizedClient.create(subject_type, value, "O=signpeer tests,CN=signpeer test CA")  # any order
    auth = ClientCertAuthorizer(WorkerConfig(1, {"NAME": "W", "AUTHTYPE": "CLIENTCERT",
                                                 "AUTHORIZED_CLIENTS": serialize_authorized_clients([rule])}))
    if ok:
        auth.authorize(req(client_certificate=pki.client.cert), None)
    else:
        with pytest.raises(AuthorizationError, match="not authorized"):
            auth.authorize(req(client_certificate=pki.client.cert), None)
    # The same decision without a SignRequest (the direct signing path's), asked twice: remembered if accepted.
    identity = CertificateIdentity.from_certificate(pki.client.cert)
    assert auth.accepts(identity) is ok and auth.accepts(identity) is ok


def test_client_cert_rules_serial_altname_uid_and_issuer(pki: PKI) -> None:
    from cryptography import x509

    cred = pki.issue_client("bob", dn_suffix=", UID=u1, O=signpeer tests")
    serial = AuthorizedClient.for_certificate(cred.cert, "CERTIFICATE_SERIALNO")
    uid = AuthorizedClient.create("SUBJECT_RDN_UID", "u1", ISSUER)
    wrong_issuer = AuthorizedClient.create("SUBJECT_RDN_CN", "bob", "CN=another CA")
    for rule, ok in [(serial, True), (uid, True), (wrong_issuer, False)]:
        auth = ClientCertAuthorizer(WorkerConfig(1, {"AUTHORIZED_CLIENTS": serialize_authorized_clients([rule])}))
        if ok:
            auth.authorize(req(client_certificate=cred.cert), None)
        else:
            with pytest.raises(AuthorizationError):
                auth.authorize(req(client_certificate=cred.cert), None)
        assert auth.accepts(CertificateIdentity.from_certificate(cred.cert)) is ok
    # Serial of another certificate does not match.
    auth = ClientCertAuthorizer(WorkerConfig(1, {"AUTHORIZED_CLIENTS": serialize_authorized_clients([serial])}))
    with pytest.raises(AuthorizationError):
        auth.authorize(req(client_certificate=pki.client.cert), None)
    with pytest.raises(AuthenticationError, match="requires a TLS client certificate"):
        auth.authorize(req(), None)
    assert not auth.accepts(CertificateIdentity("CN=x", "CN=y", 1))  # an identity without its certificate
    # Bound to a CA key: only a certificate of that CA's key matches (the identity carries it).
    bound = ClientCertAuthorizer(WorkerConfig(1, {"AUTHORIZED_CLIENTS": serialize_authorized_clients(
        [dataclasses.replace(serial, issuerKeyId="ab")])}))
    identity = CertificateIdentity.from_certificate(cred.cert)
    assert not bound.accepts(identity)
    assert bound.accepts(dataclasses.replace(identity, issuer_key_id="ab"))
    # RFC822 name in the subject alternative name.
    import datetime as dt

    from cryptography.hazmat.primitives import hashes

    from signpeer_core import devpki

    key = devpki.new_key()
    now = dt.datetime.now(dt.UTC)
    mail_cert = (x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string("CN=mail"))
                 .issuer_name(pki.ca_cert.subject).public_key(key.public_key()).serial_number(7)
                 .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
                 .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("a@example.org")]), critical=False)
                 .sign(pki.ca_key, hashes.SHA256()))
    for value, ok in [("A@example.org", True), ("b@example.org", False)]:
        rule = AuthorizedClient.create("SUBJECT_ALTNAME_RFC822NAME", value, ISSUER)
        auth = ClientCertAuthorizer(WorkerConfig(1, {"AUTHORIZED_CLIENTS": serialize_authorized_clients([rule])}))
        if ok:
            auth.authorize(req(client_certificate=mail_cert), None)
        else:
            with pytest.raises(AuthorizationError):
                auth.authorize(req(client_certificate=mail_cert), None)
    assert AuthorizedClient.for_certificate(mail_cert, "SUBJECT_ALTNAME_RFC822NAME").matchSubjectWithValue \
        == "a@example.org"


def test_username_authorizer() -> None:
    auth = build_authorizer(WorkerConfig(1, {"NAME": "W", "AUTHTYPE": "USERNAME",
                                             "USER.ALICE": hash_password("pw1"), "USER.BOB": "plain"}))
    assert isinstance(auth, UsernameAuthorizer)
    with pytest.raises(BasicAuthRequired):
        auth.authorize(req(), None)
    auth.authorize(req(username="alice"), "pw1")
    auth.authorize(req(username="Alice"), "pw1")  # cached path, names case-insensitive
    auth.authorize(req(username="bob"), "plain")
    for name, pw in [("alice", "pw2"), ("alice", None), ("carol", "pw1")]:
        with pytest.raises(BasicAuthRequired):
            auth.authorize(req(username=name), pw)
    # An unknown user pays the same password check as a known one (a configured user's stored
    # value, so the same scheme): no user-name oracle by timing; and is refused even with that
    # user's password.
    unknown, known_wrong = auth._precheck(req(username="carol"), "pw1"), auth._precheck(req(username="alice"), "x")
    assert unknown is not None and known_wrong is not None
    assert unknown[0] == auth.users["alice"] and unknown[1] == b""
    with pytest.raises(BasicAuthRequired):
        auth.authorize(req(username="carol"), "pw1")
    anyone = build_authorizer(WorkerConfig(1, {"AUTHTYPE": "org.signserver.server.UsernameAuthorizer",
                                               "ACCEPT_ALL_USERNAMES": "true"}))
    anyone.authorize(req(username="whoever"), None)
    with pytest.raises(BasicAuthRequired):
        anyone.authorize(req(), None)
    listed = build_authorizer(WorkerConfig(1, {"AUTHTYPE": "USERNAME", "ACCEPT_USERNAMES": "u1;u2"}))
    listed.authorize(req(username="u2"), None)
    with pytest.raises(BasicAuthRequired):
        listed.authorize(req(username="u3"), None)


def test_authtype_names() -> None:
    assert build_authorizer(WorkerConfig(1, {})).authtype == "CLIENTCERT"  # SignServer's default
    assert build_authorizer(WorkerConfig(1, {"AUTHTYPE": "NOAUTH"})).authtype == "NOAUTH"
    assert build_authorizer(WorkerConfig(1, {"AUTHTYPE": "org.signserver.server.ClientCertAuthorizer"})).authtype \
        == "CLIENTCERT"
    assert build_authorizer(WorkerConfig(1, {"AUTHTYPE": "org.signserver.server.UsernamePasswordAuthorizer"})) \
        .authtype == "USERNAME"
    with pytest.raises(ConfigurationError, match="unknown AUTHTYPE"):
        build_authorizer(WorkerConfig(1, {"AUTHTYPE": "MAGIC"}))


# -- over TLS, with the commands ----------------------------------------------------------------

@pytest.fixture
def auth_server(signpeer_home, services, pki: PKI, start_server):
    add_signer(services, pki, "CertWorker", AUTHTYPE="CLIENTCERT")
    add_signer(services, pki, "UserWorker", AUTHTYPE="USERNAME")
    add_signer(services, pki, "AnyUser", AUTHTYPE="USERNAME", ACCEPT_ALL_USERNAMES="true")
    add_signer(services, pki, "BadAuth", AUTHTYPE="KERBEROS")
    add_signer(services, pki, "NoAuthType")  # AUTHTYPE not set
    home = signpeer_home
    r = run_signpeer(home, "authorizedclients", "-worker", "CertWorker", "-add", "-matchSubjectWithType",
                     "SUBJECT_RDN_CN", "-cert", str(pki.client.pem), "-description", "the client")
    assert r.returncode == 0, r.stderr
    r = run_signpeer(home, "setuserpassword", "UserWorker", "alice", "wonderland")
    assert r.returncode == 0, r.stderr
    r = run_signpeer(home, "setuserpassword", "UserWorker", "bob", input=b"builder\n")
    assert r.returncode == 0, r.stderr
    return home, start_server(home)


def test_clientcert_allowed_denied_missing(auth_server, https_client, pki: PKI) -> None:
    _, server = auth_server
    ok = https_client(server, cert="client").post(PROCESS.format("CertWorker"), json={"data": "x"})
    assert ok.status_code == 200, ok.text
    denied = https_client(server, cert="admin").post(PROCESS.format("CertWorker"), json={"data": "x"})
    assert denied.status_code == 403 and "not authorized" in denied.json()["error"]
    missing = https_client(server).post(PROCESS.format("CertWorker"), json={"data": "x"})
    assert missing.status_code == 401 and "client certificate" in missing.json()["error"]


def test_a_worker_without_authtype_refuses_everyone_and_says_what_to_set(auth_server, https_client) -> None:
    _, server = auth_server
    for client in (https_client(server), https_client(server, cert="client"), https_client(server, cert="admin")):
        r = client.post(PROCESS.format("NoAuthType"), json={"data": "x"})
        assert r.status_code == 403, r.text
        message = r.json()["error"]
        assert "no authorized clients" in message and "CLIENTCERT, the default" in message
        assert "signpeer authorizedclients -worker NoAuthType -add" in message and "AUTHTYPE=NOAUTH" in message


def test_username_allowed_denied_missing(auth_server, https_client) -> None:
    _, server = auth_server
    c = https_client(server)
    missing = c.post(PROCESS.format("UserWorker"), json={"data": "x"})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Basic")
    assert c.post(PROCESS.format("UserWorker"), json={"data": "x"}, auth=("alice", "wonderland")).status_code == 200
    assert c.post(PROCESS.format("UserWorker"), json={"data": "x"}, auth=("bob", "builder")).status_code == 200
    wrong = c.post(PROCESS.format("UserWorker"), json={"data": "x"}, auth=("alice", "nope"))
    assert wrong.status_code == 401 and "alice" in wrong.json()["error"]
    assert c.post(PROCESS.format("UserWorker"), json={"data": "x"}, auth=("mallory", "x")).status_code == 401
    assert c.post(PROCESS.format("AnyUser"), json={"data": "x"}, auth=("anyone", "")).status_code == 200
    assert c.post(PROCESS.format("AnyUser"), json={"data": "x"}).status_code == 401
    bad = c.post(PROCESS.format("UserWorker"), json={"data": "x"}, headers={"Authorization": "Basic %%%"})
    assert bad.status_code == 400
    bearer = c.post(PROCESS.format("UserWorker"), json={"data": "x"}, headers={"Authorization": "Bearer abc"})
    assert bearer.status_code == 401


def test_unknown_authtype_makes_worker_offline(auth_server, https_client) -> None:
    _, server = auth_server
    r = https_client(server).post(PROCESS.format("BadAuth"), json={"data": "x"})
    assert r.status_code == 503 and "AUTHTYPE" in r.json()["error"]


def test_username_reaches_the_log(auth_server, https_client) -> None:
    _, server = auth_server
    https_client(server).post(PROCESS.format("UserWorker"), json={"data": "x"}, auth=("alice", "wonderland"))
    https_client(server, cert="client").post(PROCESS.format("CertWorker"), json={"data": "x"})
    # Worker-log lines are written right after the event-loop turn that answered the request.
    log = wait_until(lambda: "worker=CertWorker" in server.log() and server.log(), what="the worker log line")
    assert "worker=UserWorker client='user:alice'" in log
    assert "worker=CertWorker client='cert:CN=client1, OU=builds, O=signpeer tests'" in log


def test_authorizedclients_command(signpeer_home, services, pki: PKI) -> None:
    home = signpeer_home
    add_signer(services, pki, "W", AUTHTYPE="CLIENTCERT")
    r = run_signpeer(home, "authorizedclients", "-worker", "W", "-list")
    assert r.returncode == 0 and b"No authorized clients" in r.stdout
    args = ["-matchSubjectWithType", "CERTIFICATE_SERIALNO", "-matchSubjectWithValue", "0A1B",
            "-matchIssuerWithValue", "CN=Some CA,O=Org"]
    assert run_signpeer(home, "authorizedclients", "-worker", "W", "-add", *args).returncode == 0
    again = run_signpeer(home, "authorizedclients", "-worker", "W", "-add", *args)
    assert again.returncode == 0 and b"already exists" in again.stdout
    listed = run_signpeer(home, "authorizedclients", "-worker", "W", "-list").stdout.decode()
    assert "CERTIFICATE_SERIALNO: a1b" in listed and "ISSUER_DN_BCSTYLE: CN=Some CA, O=Org" in listed
    stored = services.store.worker_properties(services.runtime.get("W").id)["AUTHORIZED_CLIENTS"]
    assert json.loads(stored)[0]["matchSubjectWithValue"] == "a1b"
    events = services.store.audit_events(event="SET_WORKER_CONFIG")
    assert events and events[0].module == "WORKER_CONFIG" and events[0].admin.name.startswith("CLI user")
    # remove with the issuer in another spelling
    rm = run_signpeer(home, "authorizedclients", "-worker", "W", "-remove", "-matchSubjectWithType",
                      "CERTIFICATE_SERIALNO", "-matchSubjectWithValue", "a1b", "-matchIssuerWithValue", "O=Org, CN=Some CA")
    assert rm.returncode == 0, rm.stderr
    missing = run_signpeer(home, "authorizedclients", "-worker", "W", "-remove", *args)
    assert missing.returncode != 0 and b"no such rule" in missing.stderr
    bad = run_signpeer(home, "authorizedclients", "-worker", "W", "-add", "-matchSubjectWithType", "SUBJECT_RDN_XX",
                       "-matchSubjectWithValue", "a", "-matchIssuerWithValue", "CN=x")
    assert bad.returncode != 0 and b"SUBJECT_RDN_CN" in bad.stderr
    nocert = run_signpeer(home, "authorizedclients", "-worker", "W", "-add", "-matchSubjectWithType", "SUBJECT_RDN_CN",
                          "-cert", "/nonexistent.pem")
    assert nocert.returncode != 0 and b"cannot read" in nocert.stderr
    unknown = run_signpeer(home, "authorizedclients", "-worker", "Nope", "-list")
    assert unknown.returncode != 0 and b"no worker" in unknown.stderr


def test_setuserpassword_command(signpeer_home, services, pki: PKI) -> None:
    add_signer(services, pki, "U", AUTHTYPE="USERNAME")
    r = run_signpeer(signpeer_home, "setuserpassword", "U", "carol", "pw")
    assert r.returncode == 0, r.stderr
    stored = services.store.worker_properties(services.runtime.get("U").id)["USER.CAROL"]
    assert stored.startswith("scrypt$") and verify_password(stored, "pw") and "pw" not in stored.split("$")
    assert run_signpeer(signpeer_home, "setuserpassword", "U", "bad:name", "pw").returncode != 0
    assert run_signpeer(signpeer_home, "setuserpassword", "U", "dave", input=b"\n").returncode != 0
    assert run_signpeer(signpeer_home, "setuserpassword", "Nope", "dave", "pw").returncode != 0

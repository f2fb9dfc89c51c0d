"""``/metrics`` end to end: a server with two processes signs with a soft key and with one-time
keys whose certificates a CA peer issues in RA mode, a CA renews a signer through the peer
endpoint (once right, once with a wrong chain), peers without rights are refused; the scrape
must say exactly that. The audit stream of the renewal is in the JSON log."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from signpeer_core import devpki
from signpeer_core.certificates import encode_certificate_property
from signpeer_core.clientrules import ClientRule, serialize_rules
from signpeer_core.errors import SignpeerError
from signpeer_core.issuing import IssuingCA
from signpeer_core.storage import Admin, AuditEvent
from signpeer_core.testing import PASSWORD, client_context, open_services, wait_until
from signpeer_onetimecrypto.connectors import issue_for_request
from signpeer_onetimecrypto.raclient import RALoop, ra_client
from signpeer_peerconnector.client import PeerClient, renew

PROCESS = "/signserver/rest/v1/workers/{}/process"
HEADERS = {"X-Keyfactor-Requested-With": "tests"}


def _worker(services: Any, props: dict[str, str]) -> int:
    wid = services.store.next_worker_id()
    services.store.update_worker(wid, props, audit=[AuditEvent("SET_WORKER_CONFIG", "WORKER_CONFIG", Admin("tests"), wid)])
    return wid


def setup(home: Path, pki: Any, ca_peer: Any, auditor: Any) -> None:
    services = open_services(home)
    try:
        store = services.store
        store.update_global({"GLOB.PEERS_INCOMING_ENABLED": "true",
                             "GLOB.WSPEERS": serialize_rules([ClientRule.for_certificate(ca_peer.cert)]),
                             "GLOB.WSAUDITORS": serialize_rules([ClientRule.for_certificate(auditor.cert)])})
        _worker(services, {"NAME": "MSource", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
                           "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "SoftCryptoToken", "KEYSTORETYPE": "INTERNAL",
                           "KEYSTOREPASSWORD": PASSWORD})
        _worker(services, {
            "NAME": "MOneTime", "IMPLEMENTATION_CLASS": "OneTimeCryptoWorker", "CRYPTOTOKEN": "MSource",
            "KEYALG": "ECDSA", "KEYSPEC": "prime256v1", "CACONNECTOR_IMPLEMENTATION": "PeersRAConnector",
            "CANAME": "OneTimeCA", "ENDENTITYPROFILE": "EMPTY", "CERTIFICATEPROFILE": "ENDUSER",
            "USERNAME_PATTERN": "onetime-${transactionId}", "CERTSIGNATUREALGORITHM": "SHA256withECDSA",
            "SUBJECTDN_PATTERN": "CN=User ${username},UID=${transactionId},O=signpeer metrics tests,C=SE",
            "CACONNECTOR_WAITTIMEOUT": "20"})
        _worker(services, {"NAME": "MOneTimeSigner", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "CMSSigner",
                           "CRYPTOTOKEN": "MOneTime", "AUTHTYPE": "USERNAME", "ACCEPT_ALL_USERNAMES": "true"})
        services.runtime.load()
        token = services.runtime.get("MSource").token
        token.generate_key("renewable1", "ECDSA", "secp256r1")
        cert = pki.issue_signer(token.public_key("renewable1"), "CN=Renewable, O=signpeer tests")
        _worker(services, {"NAME": "Renewable", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "PlainSigner",
                           "CRYPTOTOKEN": "MSource", "DEFAULTKEY": "renewable1", "PEERS_VISIBLE": "true",
                           "AUTHTYPE": "NOAUTH", "SIGNERCERTCHAIN": encode_certificate_property([cert, pki.ca_cert])})
        store.bump_config_generation()
    finally:
        services.close()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(got: dict, name: str, **labels: str) -> float:
    return got.get((name, frozenset(labels.items())), 0.0)


def fresh(server: Any, pki: Any, cert: Any = None) -> httpx.Client:
    """A client without kept-alive connections: requests spread over both server processes."""
    return httpx.Client(base_url=server.url, verify=client_context(pki.ca_pem, cert.pair if cert else None),
                        headers=HEADERS, timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


def test_scrape_says_what_the_server_did(home: Path, pki: Any, start_server: Any, tmp_path: Path) -> None:
    ca_peer = pki.issue_client("CA peer", dn_suffix=", O=signpeer CA")
    auditor = pki.issue_client("Prometheus")
    intruder = pki.issue_client("Not a peer")
    (home / "signpeer.toml").write_text((home / "signpeer.toml").read_text()
                                        + 'log_format = "json"\nlog_file = "server.log"\n')
    setup(home, pki, ca_peer, auditor)
    started = time.time()
    server = start_server(home, "--workers", "2")

    client = ra_client(server.url, ca_peer.pem, ca_peer.key_pem, pki.ca_pem, max_connections=4)
    loop = RALoop(client, lambda req: issue_for_request(pki.ca_key, [pki.ca_cert], req), min_parallel=1,
                  max_parallel=2, wait=2.0).start()
    try:
        with fresh(server, pki) as rest:
            for i in range(6):
                r = rest.post(PROCESS.format("MOneTimeSigner"), auth=(f"user{i}", ""),
                              json={"data": base64.b64encode(f"one-time {i}".encode()).decode(),
                                    "encoding": "BASE64"})
                assert r.status_code == 200, r.text
            for i in range(10):
                assert rest.post(PROCESS.format("Renewable"), json={"data": f"plain {i}"}).status_code == 200
    finally:
        loop.close()
        client.close()

    # The CA renews Renewable (same key), then sends a chain for another key: refused.
    key, issuer_cert = devpki.make_ca("CN=Metrics Issuing CA, O=signpeer tests")
    ca_pem, ca_key_pem = tmp_path / "issuing.pem", tmp_path / "issuing-key.pem"
    devpki.write_public(ca_pem, devpki.cert_pem(issuer_cert))
    devpki.write_private(ca_key_pem, devpki.key_pem(key))
    with PeerClient(server.url, ca_peer.pem, ca_peer.key_pem, pki.ca_pem) as peer:
        peer.ping()
        result = renew(peer, IssuingCA.from_files(ca_pem, ca_key_pem), "Renewable")
        assert result.ok, result.error
        other = pki.issue_client("someone else")  # a certificate for another key: refused, 409
        with pytest.raises(SignpeerError) as refused:
            peer.install("Renewable", [other.cert])
        assert refused.value.status == 409
    new_not_after = result.certificate.not_valid_after_utc.timestamp()
    with fresh(server, pki) as anonymous:
        assert anonymous.get("/signserver/peer/v1/ping").status_code == 401
    with fresh(server, pki, intruder) as stranger:
        assert stranger.get("/signserver/peer/v1/ping").status_code == 403

    def scrape() -> dict:
        with fresh(server, pki, auditor) as scraper:
            r = scraper.get("/metrics")
        assert r.status_code == 200, r.text
        return samples(r.text)

    # Both processes reload the renewed worker and the registry is written behind: wait for them.
    got = wait_until(lambda: (lambda g: g if value(g, "signpeer_peer_incoming_connections") == 2 and value(
        g, "signpeer_signing_request_duration_seconds_count", worker_type="CMSSigner") == 6 and value(
        g, "signpeer_signing_request_duration_seconds_count", worker_type="PlainSigner") == 10 and all(
        value(s, "signpeer_signer_certificate_not_after_seconds", worker="Renewable") == new_not_after
        for s in (g, scrape(), scrape())) else None)(scrape()), timeout=30, what="renewal and registry in /metrics")

    # signing
    assert value(got, "signpeer_signing_requests_total", worker="MOneTimeSigner", outcome="success") == 6
    assert value(got, "signpeer_signing_requests_total", worker="Renewable", outcome="success") == 10
    assert value(got, "signpeer_signing_token_duration_seconds_count", worker_type="CMSSigner") == 6
    # one-time keys: as many destroyed as made, each stage timed once per signature
    assert value(got, "signpeer_onetime_keys_generated_total") == 6
    assert value(got, "signpeer_onetime_keys_destroyed_total") == 6
    for stage in ("keygen", "csr", "ca", "delete"):
        assert value(got, "signpeer_onetime_stage_duration_seconds_count", stage=stage) == 6, stage
    # the RA queue: six requests queued, claimed and answered; a CA peer polled
    assert value(got, "signpeer_onetime_ra_queued_seconds_count") == 6
    assert value(got, "signpeer_onetime_ra_claimed_seconds_count") == 6
    assert value(got, "signpeer_onetime_ra_requests", state="answered") == 6
    assert value(got, "signpeer_onetime_ra_requests", state="pending") == 0
    assert value(got, "signpeer_onetime_ra_oldest_open_age_seconds") == 0
    assert value(got, "signpeer_onetime_ra_last_poll_timestamp_seconds") >= started
    # the peer endpoint
    assert value(got, "signpeer_peer_calls_total", operation="ping", outcome="success") == 1
    assert value(got, "signpeer_peer_calls_total", operation="csr", outcome="success") == 1
    assert value(got, "signpeer_peer_calls_total", operation="install", outcome="success") == 1
    assert value(got, "signpeer_peer_calls_total", operation="install", outcome="conflict") == 1
    assert value(got, "signpeer_peer_calls_total", operation="ping", outcome="unauthenticated") == 1
    assert value(got, "signpeer_peer_calls_total", operation="ping", outcome="unauthorized") == 1
    assert value(got, "signpeer_peer_refused_total", reason="unauthenticated") == 1
    assert value(got, "signpeer_peer_refused_total", reason="unauthorized") == 1
    assert value(got, "signpeer_peer_renewals_total", worker="Renewable", outcome="success") == 1
    assert value(got, "signpeer_peer_renewals_total", worker="Renewable", outcome="failed") == 1
    assert value(got, "signpeer_peer_last_renewal_timestamp_seconds", worker="Renewable", outcome="success") >= started
    assert value(got, "signpeer_worker_peers_issued", worker="Renewable") == 1
    assert ("signpeer_worker_peers_issued", frozenset({("worker", "MOneTimeSigner")})) not in got
    # the RA operations are counted too (their names come from the one-time plugin's routes)
    ra_calls = sum(v for (name, labels), v in got.items() if name == "signpeer_peer_calls_total"
                   and dict(labels)["operation"] not in ("ping", "csr", "install"))
    assert ra_calls >= 6  # at least a claim per request (each claim carries the answer to the one before)
    # no serial or subject of a peer is a label value
    text = "\n".join(str(k) for k in got)
    assert "Not a peer" not in text and format(intruder.cert.serial_number, "x") not in text

    # The audit stream: the renewal's records, as committed, in the JSON log.
    def audit_events() -> set[str]:
        lines = [json.loads(x) for x in (home / "server.log").read_text().splitlines() if x.strip()]
        return {x["event"] for x in lines if x["logger"] == "signpeer.audit"}

    wait_until(lambda: {"GENCSR", "CERTINSTALLED", "CERTCHAININSTALLED"} <= audit_events(), timeout=10)

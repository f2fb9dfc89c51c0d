"""Traces of one-time key signing (RA mode, a real CA peer loop): the one-time stages and the RA
wait as spans of the signing request, exported over OTLP/HTTP by a real ``signpeer serve``; a CA
refusal marks the CA connector's span and the request's failed."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk.trace", reason="the opentelemetry extra is not installed")

from signpeer_core.api import CARefusedError
from signpeer_core.clientrules import ClientRule, serialize_rules
from signpeer_core.testing import open_services
from signpeer_core.testing.otlp import OtlpReceiver, request_spans, tracing_env
from signpeer_onetimecrypto.connectors import issue_for_request
from signpeer_onetimecrypto.raclient import RALoop, ra_client

PROCESS = "/signserver/rest/v1/workers/OneTimeSigner/process"


def test_one_time_stages_and_the_ra_wait_are_spans(home: Path, pki: Any, configure: Any, start_server: Any,
                                                   https_client: Any, otlp_receiver: OtlpReceiver) -> None:
    ca_peer = pki.issue_client("CA peer", dn_suffix=", O=signpeer CA")
    services = open_services(home)
    try:
        services.store.update_global({"GLOB.PEERS_INCOMING_ENABLED": "true",
                                      "GLOB.WSPEERS": serialize_rules([ClientRule.for_certificate(ca_peer.cert)])})
        configure(services, onetime={"CACONNECTOR_IMPLEMENTATION": "PeersRAConnector", "CANAME": "TraceCA",
                                     "ENDENTITYPROFILE": "EMPTY", "CERTIFICATEPROFILE": "ENDUSER",
                                     "USERNAME_PATTERN": "onetime-${transactionId}", "CACONNECTOR_WAITTIMEOUT": "20",
                                     "CACERTIFICATE_FILE": None, "CAKEY_FILE": None},
                  signer={"NAME": "OneTimeSigner", "AUTHTYPE": "USERNAME", "ACCEPT_ALL_USERNAMES": "true"})
    finally:
        services.close()
    server = start_server(home, env=tracing_env(otlp_receiver))

    def issue(request: Any) -> Any:
        if "refuse-me" in request.subject_dn:
            raise CARefusedError("not this one")
        return issue_for_request(pki.ca_key, [pki.ca_cert], request)

    client = ra_client(server.url, ca_peer.pem, ca_peer.key_pem, pki.ca_pem, max_connections=2)
    loop = RALoop(client, issue, min_parallel=1, max_parallel=1, wait=2.0).start()
    try:
        rest = https_client(server)
        data = {"data": base64.b64encode(b"one-time document").decode(), "encoding": "BASE64"}
        ok = rest.post(PROCESS, auth=("alice", ""), json=data)
        assert ok.status_code == 200, ok.text
        refused = rest.post(PROCESS, auth=("refuse-me", ""), json=data)
        assert refused.status_code == 502, refused.text
    finally:
        loop.close()
        client.close()

    stages = {"signpeer.request", "signpeer.authorize", "signpeer.token.acquire", "signpeer.onetime.keygen",
              "signpeer.onetime.csr", "signpeer.onetime.ca", "signpeer.ra.wait", "signpeer.token.sign",
              "signpeer.token.release", "signpeer.onetime.delete"}
    spans = request_spans(otlp_receiver, ok.headers["x-request-id"], stages)
    root, acquire = spans["signpeer.request"], spans["signpeer.token.acquire"]
    assert root.attributes["signpeer.worker.name"] == "OneTimeSigner" and root.status == "UNSET"
    assert acquire.parent_span_id == root.span_id and acquire.attributes["signpeer.token.type"] == "OneTimeCryptoToken"
    for stage in ("signpeer.onetime.keygen", "signpeer.onetime.csr", "signpeer.onetime.ca"):
        assert spans[stage].parent_span_id == acquire.span_id, stage
    assert spans["signpeer.onetime.keygen"].end_ns <= spans["signpeer.onetime.csr"].start_ns
    assert spans["signpeer.onetime.csr"].end_ns <= spans["signpeer.onetime.ca"].start_ns
    ca, wait = spans["signpeer.onetime.ca"], spans["signpeer.ra.wait"]
    assert ca.attributes["signpeer.ca_connector"] == "PeersRAConnector"
    assert wait.parent_span_id == ca.span_id
    assert wait.attributes["signpeer.ra.queue"] == "TraceCA"
    assert wait.attributes["signpeer.ra.request_id"] == ok.headers["x-request-id"]
    assert wait.attributes["signpeer.ra.claims"] >= 1 and "queued" in wait.events
    assert spans["signpeer.token.sign"].parent_span_id == root.span_id
    assert acquire.end_ns <= spans["signpeer.token.sign"].start_ns
    release = spans["signpeer.token.release"]
    assert spans["signpeer.onetime.delete"].parent_span_id == release.span_id
    assert spans["signpeer.token.sign"].end_ns <= release.start_ns

    # The CA refused: its span and the RA wait say so, the key was still deleted.
    spans = request_spans(otlp_receiver, refused.headers["x-request-id"],
                          {"signpeer.request", "signpeer.onetime.ca", "signpeer.ra.wait", "signpeer.onetime.delete"})
    for name in ("signpeer.request", "signpeer.token.acquire", "signpeer.onetime.ca", "signpeer.ra.wait"):
        assert spans[name].status == "ERROR", name
        assert "not this one" in spans[name].status_message
        assert spans[name].attributes["error.type"] == "CARefusedError"
    assert spans["signpeer.request"].attributes["signpeer.status_code"] == 502
    assert spans["signpeer.onetime.delete"].status == "UNSET"
    assert "signpeer.token.sign" not in spans

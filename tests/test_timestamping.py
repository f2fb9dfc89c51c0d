"""CMSSigner's signature time-stamp options without a time-stamp authority plugin: configuration
errors, a TSA that does not answer (TSA_TIMEOUT), a missing TSA worker, and TSA_REQUIRED=false.
Time-stamps that succeed are tested with the authority, in plugins/tsa/tests."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest
from asn1crypto import cms

from signpeer_core.errors import TimeStampError
from signpeer_core.testing import add_signer
from signpeer_core.timestamping import TimeStampResponse, build_request, token_from_response
from signpeer_core.workers import SignRequest


def sign(services: Any, worker: str, data: bytes) -> Any:
    return asyncio.run(services.runtime.get(worker).process(SignRequest(data=data, request_id="c1")))


def test_missing_tsa_worker_fails_the_request(services: Any, pki: Any) -> None:
    add_signer(services, pki, "NoTSA", implementation="CMSSigner", AUTHTYPE="NOAUTH", TSA_WORKER="Missing")
    assert services.runtime.get("NoTSA").status().active  # the TSA may come later; the request says it
    with pytest.raises(TimeStampError, match=r"time-stamp from worker 'Missing' \(TSA_WORKER\) failed: no worker"):
        sign(services, "NoTSA", b"x")


def test_a_worker_that_is_no_tsa(services: Any, pki: Any) -> None:
    add_signer(services, pki, "Plain")
    add_signer(services, pki, "CMS", implementation="CMSSigner", AUTHTYPE="NOAUTH", TSA_WORKER="Plain")
    with pytest.raises(TimeStampError, match="is not an RFC 3161 TimeStampResp"):
        sign(services, "CMS", b"x")


def test_reply_checks() -> None:
    digest = bytes(32)
    with pytest.raises(TimeStampError, match="refused the request: rejection \\(bad_alg\\): nope"):
        token_from_response(TimeStampResponse({"status": {"status": "rejection", "status_string": ["nope"],
                                                          "fail_info": {"bad_alg"}}}).dump(), "sha256", digest, 1, "X")
    with pytest.raises(TimeStampError, match="not an RFC 3161"):
        token_from_response(build_request("sha256", digest), "sha256", digest, 1, "X")


def test_tsa_required_false_signs_unstamped_and_logs(services: Any, pki: Any, caplog: pytest.LogCaptureFixture) -> None:
    add_signer(services, pki, "Lenient", implementation="CMSSigner", AUTHTYPE="NOAUTH", TSA_WORKER="Missing",
               TSA_REQUIRED="false")
    caplog.set_level(logging.WARNING, logger="signpeer.workers")
    resp = sign(services, "Lenient", b"x")
    signer = cms.ContentInfo.load(resp.data)["content"]["signer_infos"][0]
    assert not signer["unsigned_attrs"].native
    assert any("signed without a time-stamp (TSA_REQUIRED=false)" in r.getMessage() for r in caplog.records)


def test_url_timeout(services: Any, pki: Any) -> None:
    """A TSA that accepts the connection and never answers: the request fails after TSA_TIMEOUT."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        add_signer(services, pki, "Slow", implementation="CMSSigner", AUTHTYPE="NOAUTH",
                   TSA_URL=f"http://127.0.0.1:{port}/tsa", TSA_TIMEOUT="0.5")
        with pytest.raises(TimeStampError, match=rf"127.0.0.1:{port}/tsa \(TSA_URL\)"):
            sign(services, "Slow", b"x")


@pytest.mark.parametrize(("props", "error"), [
    ({"TSA_WORKER": "A", "TSA_URL": "https://tsa.example/"}, "set TSA_WORKER or TSA_URL, not both"),
    ({"TSA_URL": "ftp://tsa.example/"}, "TSA_URL must be an http(s) URL"),
    ({"TSA_WORKER": "A", "TSA_TIMEOUT": "0"}, "TSA_TIMEOUT must be between 0 and 300 seconds"),
    ({"TSA_WORKER": "A", "TSA_DIGESTALGORITHM": "MD4"}, "unsupported digest algorithm 'MD4'"),
    ({"TSA_WORKER": "A", "TSA_POLICYOID": "x.y"}, "TSA_POLICYOID is not an object identifier"),
    ({"TSA_WORKER": "A", "TSA_REQUIRED": "perhaps"}, "TSA_REQUIRED must be true or false"),
    ({"TSA_WORKER": "CMS"}, "TSA_WORKER names the worker itself"),
])
def test_configuration_errors(services: Any, pki: Any, props: dict[str, str], error: str) -> None:
    add_signer(services, pki, "CMS", implementation="CMSSigner", AUTHTYPE="NOAUTH", **props)
    status = services.runtime.get("CMS").status()
    assert not status.active and any(error in r for r in status.reasons), status.reasons



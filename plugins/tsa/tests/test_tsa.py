"""TimeStampSigner in one process, checked with openssl: replies, every property, every rejection."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import algos, cms, tsp

from signpeer_core.errors import BadRequestError, WorkerOfflineError
from signpeer_core.pipeline import Caller, TransportRequest
from signpeer_core.timestamping import TimeStampResponse, build_request


def token_of(reply: bytes) -> cms.ContentInfo:
    return TimeStampResponse.load(reply)["time_stamp_token"]


def info_of(reply: bytes) -> tsp.TSTInfo:
    return token_of(reply)["content"]["encap_content_info"]["content"].parsed


def signed_attrs(reply: bytes) -> dict[str, Any]:
    signer = token_of(reply)["content"]["signer_infos"][0]
    return {a["type"].native: a["values"][0] for a in signer["signed_attrs"]}


def test_active_with_timestamping_eku_and_granted_reply_verifies_with_openssl(services: Any, pki: Any, kit: Any,
                                                                                tmp_path: Path) -> None:
    cert = kit.add_tsa(services, pki)
    assert services.runtime.get("TSA").status().active, services.runtime.get("TSA").status().reasons
    query = kit.ts_query(tmp_path, b"hello", "-cert")
    reply = kit.process(services, "TSA", query.read_bytes())
    text = kit.reply_text(tmp_path, reply)
    assert "Status: Granted." in text and "Status description: Operation Okay" in text
    assert f"Policy OID: {kit.POLICY}" in text
    assert "Hash Algorithm: sha256" in text and "Nonce: 0x" in text
    verified = kit.ts_verify(tmp_path, query, reply, pki)
    assert verified.returncode == 0, verified.stderr.decode()
    assert b"Verification: OK" in verified.stdout
    # certReq: the signer certificate is in the token; ESS signing-certificate-v2 names it
    certs = token_of(reply)["content"]["certificates"]
    assert certs[0].chosen.dump() == cert.public_bytes(__import__("cryptography.hazmat.primitives.serialization",
                                                                  fromlist=["Encoding"]).Encoding.DER)
    attrs = signed_attrs(reply)
    assert set(attrs) >= {"content_type", "message_digest", "signing_time", "signing_certificate_v2",
                          "cms_algorithm_protection"}
    ess = attrs["signing_certificate_v2"]["certs"][0]
    assert ess["issuer_serial"]["serial_number"].native == cert.serial_number


def test_without_cert_req_the_token_has_no_certificates(services: Any, pki: Any, kit: Any, tmp_path: Path) -> None:
    cert = kit.add_tsa(services, pki)
    query = kit.ts_query(tmp_path, b"doc", "-no_nonce")
    reply = kit.process(services, "TSA", query.read_bytes())
    assert not token_of(reply)["content"]["certificates"].native
    assert info_of(reply)["nonce"].native is None
    assert kit.ts_verify(tmp_path, query, reply, pki).returncode != 0  # no certificate to check it with
    verified = kit.ts_verify(tmp_path, query, reply, pki, cert)
    assert verified.returncode == 0, verified.stderr.decode()


@pytest.mark.parametrize(("eku", "reason"), [
    ("none", "Missing extended key usage timeStamping"),
    ("noncritical", "The extended key usage extension must be present and marked as critical"),
    ("extra", "No other extended key usages than timeStamping is allowed"),
])
def test_offline_without_a_critical_timestamping_eku(services: Any, pki: Any, kit: Any, tmp_path: Path,
                                                     eku: str, reason: str) -> None:
    kit.add_tsa(services, pki, eku=eku)
    status = services.runtime.get("TSA").status()
    assert not status.active and reason in status.reasons
    with pytest.raises(WorkerOfflineError, match=reason):
        kit.process(services, "TSA", kit.ts_query(tmp_path).read_bytes())


def test_properties_in_the_token(services: Any, pki: Any, kit: Any, tmp_path: Path) -> None:
    kit.add_tsa(services, pki, ACCURACYSECONDS="1", ACCURACYMILLIS="500", ACCURACYMICROS="100", ORDERING="true",
                TSA="CN=Test TSA, O=signpeer tests", MAXSERIALNUMBERLENGTH="16",
                INCLUDESTATUSSTRING="false", INCLUDESIGNINGTIMEATTRIBUTE="false",
                INCLUDECMSALGORITHMPROTECTATTRIBUTE="false", CERTIFICATE_DIGEST_ALGORITHM="SHA512",
                INCLUDE_CERTID_ISSUERSERIAL="false", SIGNATUREALGORITHM="SHA384withECDSA")
    query = kit.ts_query(tmp_path, b"props", "-cert", "-sha512")
    reply = kit.process(services, "TSA", query.read_bytes())
    text = kit.reply_text(tmp_path, reply)
    assert "Accuracy: 0x01 seconds, 0x01F4 millis, 0x64 micros" in text
    assert "Ordering: yes" in text
    assert "TSA: DirName:/O=signpeer tests/CN=Test TSA" in text
    assert "Status description: unspecified" in text  # INCLUDESTATUSSTRING=false
    assert "Hash Algorithm: sha512" in text
    serial = info_of(reply)["serial_number"].native
    assert 2 ** 64 <= serial < 2 ** 127  # 16 bytes, positive
    attrs = signed_attrs(reply)
    assert "signing_time" not in attrs and "cms_algorithm_protection" not in attrs
    ess = attrs["signing_certificate_v2"]["certs"][0]
    assert ess["hash_algorithm"]["algorithm"].native == "sha512" and ess["issuer_serial"].native is None
    signer = token_of(reply)["content"]["signer_infos"][0]
    assert signer["digest_algorithm"]["algorithm"].native == "sha384"
    verified = kit.ts_verify(tmp_path, query, reply, pki)
    assert verified.returncode == 0, verified.stderr.decode()


def test_sha1_certificate_digest_gives_the_v1_signing_certificate(services: Any, pki: Any, kit: Any,
                                                                  tmp_path: Path) -> None:
    kit.add_tsa(services, pki, CERTIFICATE_DIGEST_ALGORITHM="SHA1", TSA_FROM_CERT="true", keyalg="RSA",
                keyspec="2048")
    query = kit.ts_query(tmp_path, b"v1", "-cert")
    reply = kit.process(services, "TSA", query.read_bytes())
    attrs = signed_attrs(reply)
    assert "signing_certificate" in attrs and "signing_certificate_v2" not in attrs
    assert "TSA: DirName:/O=signpeer tests/CN=Test TSA" in kit.reply_text(tmp_path, reply)  # TSA_FROM_CERT
    verified = kit.ts_verify(tmp_path, query, reply, pki)
    assert verified.returncode == 0, verified.stderr.decode()


def test_policies(services: Any, pki: Any, kit: Any, tmp_path: Path) -> None:
    kit.add_tsa(services, pki, ACCEPTANYPOLICY="", ACCEPTEDPOLICIES=f"{kit.POLICY};1.2.3.4")
    query = kit.ts_query(tmp_path, b"p", "-tspolicy", "1.2.3.4", "-cert")
    reply = kit.process(services, "TSA", query.read_bytes())
    assert "Policy OID: 1.2.3.4" in kit.reply_text(tmp_path, reply)
    assert kit.ts_verify(tmp_path, query, reply, pki).returncode == 0
    refused = kit.process(services, "TSA", kit.ts_query(tmp_path, b"p", "-tspolicy", "1.2.3.5").read_bytes())
    text = kit.reply_text(tmp_path, refused)
    assert "Status: Rejected." in text and "the requested TSA policy is not supported by the TSA" in text
    assert "request contains unknown policy" in text
    # No policy requested: the default one, whatever ACCEPTEDPOLICIES says
    assert f"Policy OID: {kit.POLICY}" in kit.reply_text(tmp_path, kit.process(services, "TSA", kit.ts_query(
        tmp_path, b"p").read_bytes()))


def test_empty_accepted_policies_refuses_every_requested_policy(services: Any, pki: Any, kit: Any,
                                                                tmp_path: Path) -> None:
    kit.add_tsa(services, pki, ACCEPTANYPOLICY="false", ACCEPTEDPOLICIES="")
    assert services.runtime.get("TSA").status().active
    reply = kit.process(services, "TSA", kit.ts_query(tmp_path, b"p", "-tspolicy", kit.POLICY).read_bytes())
    assert "the requested TSA policy is not supported" in kit.reply_text(tmp_path, reply)


def test_rejections(services: Any, pki: Any, kit: Any, tmp_path: Path) -> None:
    kit.add_tsa(services, pki, ACCEPTEDALGORITHMS="SHA256;SHA512")
    bad_alg = kit.process(services, "TSA", kit.ts_query(tmp_path, b"x", "-sha1").read_bytes())
    text = kit.reply_text(tmp_path, bad_alg)
    assert "Status: Rejected." in text and "unrecognized or unsupported algorithm identifier" in text
    assert TimeStampResponse.load(bad_alg)["status"]["fail_info"].native == {"bad_alg"}
    malformed = kit.process(services, "TSA", b"\x30\x03\x02\x01\x01 not a request")
    text = kit.reply_text(tmp_path, malformed)
    assert "the data submitted has the wrong format" in text and "The request could not be parsed." in text
    short = build_request("sha256", b"\x01" * 20)  # a SHA-256 imprint of 20 bytes
    assert TimeStampResponse.load(kit.process(services, "TSA", short))["status"]["fail_info"].native == {
        "bad_data_format"}
    with pytest.raises(BadRequestError, match="Request must contain data"):
        kit.process(services, "TSA", b"")


def _request_with_extension(oid: str) -> bytes:
    req = tsp.TimeStampReq.load(build_request("sha256", b"\x02" * 32, nonce=7))
    return tsp.TimeStampReq({
        "version": "v1", "message_imprint": req["message_imprint"], "nonce": 7, "cert_req": True,
        "extensions": [{"extn_id": oid, "critical": False, "extn_value": b"\x05\x00"}],
    }).dump()


def test_extensions(services: Any, pki: Any, kit: Any, tmp_path: Path) -> None:
    kit.add_tsa(services, pki)
    refused = TimeStampResponse.load(kit.process(services, "TSA", _request_with_extension("1.2.3.9")))
    assert refused["status"]["fail_info"].native == {"unaccepted_extensions"}
    assert "the requested extension is not supported by the TSA" in kit.reply_text(tmp_path, refused.dump())
    kit.add_tsa(services, pki, "TSA2", ACCEPTEDEXTENSIONS="1.2.3.8; 1.2.3.9")
    granted = TimeStampResponse.load(kit.process(services, "TSA2", _request_with_extension("1.2.3.9")))
    assert granted["status"]["status"].native == "granted"


@pytest.mark.parametrize(("props", "error"), [
    ({"DEFAULTTSAPOLICYOID": ""}, "No default TSA policy OID has been configured"),
    ({"DEFAULTTSAPOLICYOID": "not.an.oid"}, "TSA policy OID not.an.oid is invalid"),
    ({"ACCEPTANYPOLICY": ""}, "Must specify either ACCEPTEDPOLICIES or ACCEPTANYPOLICY true"),
    ({"ACCEPTEDPOLICIES": "1.2.3"}, "Can not set ACCEPTANYPOLICY to true and ACCEPTEDPOLICIES at the same time"),
    ({"ACCEPTANYPOLICY": "yes"}, "Illegal value for ACCEPTANYPOLICY: yes"),
    ({"ACCEPTEDALGORITHMS": "SHA256;SHA3"}, "ACCEPTEDALGORITHMS: unsupported algorithm(s) SHA3"),
    ({"ACCEPTEDEXTENSIONS": "x"}, "ACCEPTEDEXTENSIONS: not an object identifier: x"),
    ({"ACCURACYMILLIS": "1000"}, "ACCURACYMILLIS must be between 1 and 999, got 1000"),
    ({"ACCURACYMICROS": "ten"}, "ACCURACYMICROS must be a whole number"),
    ({"ACCURACYSECONDS": "-1"}, "ACCURACYSECONDS must be between 0"),
    ({"ORDERING": "maybe"}, "ORDERING must be true or false"),
    ({"TSA": "CN=X", "TSA_FROM_CERT": "true"},
     "Can not set TSA_FROM_CERT to true and set TSA worker property at the same time"),
    ({"MAXSERIALNUMBERLENGTH": "7"}, "Maximum serial number length specified is too small: 7"),
    ({"MAXSERIALNUMBERLENGTH": "21"}, "Maximum serial number length specified is too large: 21"),
    ({"MAXSERIALNUMBERLENGTH": "x"}, 'Maximum serial number length specified is invalid: "x"'),
    ({"INCLUDE_CERTID_ISSUERSERIAL": "1"}, "Illegal value for property INCLUDE_CERTID_ISSUERSERIAL"),
    ({"CERTIFICATE_DIGEST_ALGORITHM": "MD5"}, "Unsupported certificate digest algorithm: MD5"),
    ({"VERIFY_TOKEN_SIGNATURE": "no"}, "Incorrect value for VERIFY_TOKEN_SIGNATURE"),
    ({"INCLUDESTATUSSTRING": "x"}, "INCLUDESTATUSSTRING must be true or false"),
    ({"TIMESOURCE": "org.signserver.server.StatusReadingLocalComputerTimeSource"}, "Could not create time source"),
    ({"SIGNATUREALGORITHM": "NONEwithECDSA"}, "cannot sign time-stamps"),
])
def test_configuration_errors_make_the_worker_offline(services: Any, pki: Any, kit: Any, props: dict[str, str],
                                                      error: str) -> None:
    kit.add_tsa(services, pki, **props)
    status = services.runtime.get("TSA").status()
    assert not status.active
    assert any(error in r for r in status.reasons), status.reasons


def test_require_valid_chain(services: Any, pki: Any, kit: Any) -> None:
    from signpeer_core.certificates import encode_certificate_property
    from signpeer_core.testing import make_pki

    kit.add_tsa(services, pki, REQUIREVALIDCHAIN="true")
    assert services.runtime.get("TSA").status().active
    other = make_pki(pki.dir / "other")  # a chain whose second certificate did not issue the first
    worker = services.runtime.get("TSA")
    services.store.update_worker(worker.id, {"SIGNERCERTCHAIN": encode_certificate_property(
        [worker.chain[0], other.ca_cert])})
    services.runtime.load()
    status = services.runtime.get("TSA").status()
    assert "Not strictly valid chain and REQUIREVALIDCHAIN specified" in status.reasons


def test_verify_token_signature_refuses_a_bad_signature(services: Any, pki: Any, kit: Any, tmp_path: Path,
                                                         monkeypatch: Any) -> None:
    """A token the certificate cannot verify never leaves (VERIFY_TOKEN_SIGNATURE, default true)."""
    from signpeer_tsa import assembly

    kit.add_tsa(services, pki)
    kit.add_tsa(services, pki, "Unchecked", VERIFY_TOKEN_SIGNATURE="false")
    query = kit.ts_query(tmp_path, b"x", "-cert")
    for name in ("TSA", "Unchecked"):  # the templates are built with the good key first
        kit.process(services, name, query.read_bytes())
    real = assembly.sign

    def faulty(*args: Any) -> bytes:  # a device fault: a signature that does not verify
        signature = bytearray(real(*args))
        signature[-1] ^= 1
        return bytes(signature)

    monkeypatch.setattr(assembly, "sign", faulty)
    with pytest.raises(WorkerOfflineError, match="Token validation failed"):
        kit.process(services, "TSA", query.read_bytes())
    reply = kit.process(services, "Unchecked", query.read_bytes())
    assert TimeStampResponse.load(reply)["status"]["status"].native == "granted"
    assert kit.ts_verify(tmp_path, query, reply, pki).returncode != 0  # what the check keeps from leaving


def test_tokens_are_canonical_der(services: Any, pki: Any, kit: Any, tmp_path: Path) -> None:
    """The DER assembled per request equals asn1crypto's re-encoding of what it parses, for the
    granted reply, the token, the TSTInfo and the signed attributes, with and without options."""
    kit.add_tsa(services, pki, ACCURACYMILLIS="5", ORDERING="true", TSA_FROM_CERT="true", MAXSERIALNUMBERLENGTH="20")
    kit.add_tsa(services, pki, "Plain", INCLUDESIGNINGTIMEATTRIBUTE="false", keyalg="RSA", keyspec="2048")
    for name in ("TSA", "Plain"):
        for opts in (("-cert",), ("-no_nonce",)):
            reply = kit.process(services, name, kit.ts_query(tmp_path, b"der", *opts).read_bytes())
            parsed = TimeStampResponse.load(reply)
            assert parsed.dump(force=True) == reply
            token = parsed["time_stamp_token"]
            info = token["content"]["encap_content_info"]["content"].parsed
            assert info.dump(force=True) == info.dump()
            signer = token["content"]["signer_infos"][0]
            assert signer["signed_attrs"].dump(force=True) == signer["signed_attrs"].dump()


def test_worker_log_has_serial_and_hash(services: Any, pki: Any, kit: Any, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    kit.add_tsa(services, pki)
    caplog.set_level(logging.INFO, logger="signpeer.worker")
    reply = kit.process(services, "TSA", kit.ts_query(tmp_path, b"logged").read_bytes(), request_id="rq-77")
    info = info_of(reply)
    lines = [r.getMessage() for r in caplog.records if r.name == "signpeer.worker.tsa"]
    assert len(lines) == 1
    line = lines[0]
    assert "request_id=rq-77" in line and "status=granted" in line
    assert f"serial={info['serial_number'].native:x}" in line
    assert f"hash={info['message_imprint']['hashed_message'].native.hex()}" in line
    assert any("request_id=rq-77" in r.getMessage() and "outcome=SUCCESS" in r.getMessage()
               for r in caplog.records if r.name == "signpeer.worker")


def test_concurrent_burst_every_serial_differs(services: Any, pki: Any, kit: Any) -> None:
    kit.add_tsa(services, pki)
    request = build_request("sha256", b"\x03" * 32, nonce=1)

    async def burst() -> list[bytes]:
        return await asyncio.gather(*[
            services.pipeline.process("TSA", TransportRequest(data=request), Caller("TEST")) for _ in range(400)])

    results = asyncio.run(burst())
    serials = [TimeStampResponse.load(r.data)["time_stamp_token"]["content"]["encap_content_info"]["content"]
               .parsed["serial_number"].native for r in results]
    assert len(set(serials)) == 400
    assert all(0 < s < 2 ** 63 for s in serials)


def test_serials_differ_across_processes_of_a_node_and_across_nodes(monkeypatch: Any) -> None:
    """Two processes (ids) of one node in the same millisecond, and two nodes: no repeat."""
    from signpeer_tsa import serials

    monkeypatch.setattr(serials.time, "time", lambda: 1_800_000_000.0)  # every call in the same millisecond
    seen: set[int] = set()
    for node in ("node-a", "node-b"):
        for pid in (4242, 4243, 4194303):
            monkeypatch.setattr(serials.os, "getpid", lambda pid=pid: pid)
            gen = serials.SerialNumbers(node)
            for _ in range(1000):
                seen.add(gen.next(16))
    assert len(seen) == 6000
    with pytest.raises(ValueError):
        serials.SerialNumbers("n").next(7)


def test_digest_algorithm_oid_names() -> None:
    """The ACCEPTEDALGORITHMS table names the OIDs asn1crypto knows for the SHA family."""
    from signpeer_tsa.config import ALGORITHMS

    for name in ("SHA1", "SHA224", "SHA256", "SHA384", "SHA512"):
        assert algos.DigestAlgorithmId(name.lower().replace("sha1", "sha1")).dotted == ALGORITHMS[name]

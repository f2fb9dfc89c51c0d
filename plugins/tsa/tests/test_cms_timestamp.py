"""CMS signatures time-stamped by a TimeStampSigner (TSA_WORKER, in process): the token is taken
out of the unsigned attribute and verified with ``openssl ts -verify`` against the hash of the
signature value; a one-time certificate's signature verifies with ``openssl cms -verify -attime``
at the time-stamp's time, long after the certificate expired."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signpeer_core import devpki
from signpeer_core.errors import TimeStampError
from signpeer_core.testing import PASSWORD, add_signer
from signpeer_core.workers import SignRequest


def sign(services: Any, worker: str, data: bytes, username: str | None = None) -> Any:
    w = services.runtime.get(worker)
    return asyncio.run(w.process(SignRequest(data=data, request_id="cms-1", username=username)))


def signature_and_token(der: bytes) -> tuple[bytes, bytes]:
    signer = cms.ContentInfo.load(der)["content"]["signer_infos"][0]
    attrs = [a for a in signer["unsigned_attrs"] if a["type"].native == "signature_time_stamp_token"]
    assert len(attrs) == 1 and len(attrs[0]["values"]) == 1
    return bytes(signer["signature"].native), bytes(attrs[0]["values"][0].dump())


def gen_time(token: bytes) -> dt.datetime:
    info = cms.ContentInfo.load(token)["content"]["encap_content_info"]["content"].parsed
    value: dt.datetime = info["gen_time"].native
    return value


def verify_token(kit: Any, tmp_path: Path, pki: Any, signature: bytes, token: bytes, *extra: str) -> None:
    path = tmp_path / "token.der"
    path.write_bytes(token)
    out = kit.openssl("ts", "-verify", "-digest", hashlib.sha256(signature).hexdigest(), "-in", str(path),
                      "-token_in", "-CAfile", str(pki.ca_pem), *extra, check=False)
    assert out.returncode == 0 and b"Verification: OK" in out.stdout, out.stderr.decode()


def cms_verify(kit: Any, tmp_path: Path, pki: Any, der: bytes, *extra: str) -> Any:
    path = tmp_path / "sig.p7m"
    path.write_bytes(der)
    return kit.openssl("cms", "-verify", "-inform", "DER", "-in", str(path), "-CAfile", str(pki.ca_pem),
                       "-purpose", "any", *extra, check=False)


def test_cms_signer_with_tsa_worker(services: Any, pki: Any, kit: Any, tmp_path: Path) -> None:
    kit.add_tsa(services, pki)
    add_signer(services, pki, "CMS", implementation="CMSSigner", AUTHTYPE="NOAUTH", TSA_WORKER="TSA")
    resp = sign(services, "CMS", b"stamped document")
    out = cms_verify(kit, tmp_path, pki, resp.data)
    assert out.returncode == 0 and out.stdout == b"stamped document", out.stderr.decode()
    signature, token = signature_and_token(resp.data)
    verify_token(kit, tmp_path, pki, signature, token)
    # Not over anything else: a token checked against another hash fails
    path = tmp_path / "token.der"
    wrong = kit.openssl("ts", "-verify", "-digest", hashlib.sha256(b"other").hexdigest(), "-in", str(path),
                        "-token_in", "-CAfile", str(pki.ca_pem), check=False)
    assert wrong.returncode != 0


def test_one_time_signature_verifies_after_its_certificate_expired(services: Any, pki: Any, kit: Any,
                                                                    tmp_path: Path, home: Path) -> None:
    pytest.importorskip("signpeer_onetimecrypto")
    devpki.write_public(home / "onetime-ca.pem", devpki.cert_pem(pki.ca_cert))
    devpki.write_private(home / "onetime-ca-key.pem", devpki.key_pem(pki.ca_key))
    kit.add_tsa(services, pki)
    store = services.store
    source = store.next_worker_id()
    store.update_worker(source, {"NAME": "SoftSource", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
                                 "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "SoftCryptoToken", "KEYSTORETYPE": "INTERNAL",
                                 "KEYSTOREPASSWORD": PASSWORD})
    store.update_worker(source + 1, {
        "NAME": "OneTime", "IMPLEMENTATION_CLASS": "OneTimeCryptoWorker", "CRYPTOTOKEN": "SoftSource",
        "CACONNECTOR_IMPLEMENTATION": "LocalCAConnector", "CACERTIFICATE_FILE": "onetime-ca.pem",
        "CAKEY_FILE": "onetime-ca-key.pem", "SUBJECTDN_PATTERN": "CN=${username},UID=${transactionId}",
        "CERTIFICATEENDTIME": "0:0:5"})  # five minutes
    store.update_worker(source + 2, {"NAME": "OneTimeCMS", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "CMSSigner",
                                     "CRYPTOTOKEN": "OneTime", "AUTHTYPE": "USERNAME", "TSA_WORKER": "TSA"})
    services.runtime.load()
    try:
        assert services.runtime.get("OneTimeCMS").status().active, services.runtime.get("OneTimeCMS").status().reasons
        resp = sign(services, "OneTimeCMS", b"contract", username="alice")
    finally:
        from signpeer_onetimecrypto.worker import close_pools

        close_pools()
    cert: x509.Certificate = resp.signer_certificate
    assert cert.not_valid_after_utc - cert.not_valid_before_utc < dt.timedelta(minutes=20)
    signature, token = signature_and_token(resp.data)
    stamped = gen_time(token)
    assert cert.not_valid_before_utc <= stamped <= cert.not_valid_after_utc
    later = int((cert.not_valid_after_utc + dt.timedelta(days=30)).timestamp())
    # A month after the one-time certificate expired: the CMS alone no longer verifies ...
    expired = cms_verify(kit, tmp_path, pki, resp.data, "-attime", str(later))
    assert expired.returncode != 0 and b"certificate has expired" in expired.stderr
    # ... the time-stamp still does, and proves the signature existed at its time ...
    verify_token(kit, tmp_path, pki, signature, token, "-attime", str(later))
    # ... at which the CMS verifies.
    at_stamp = cms_verify(kit, tmp_path, pki, resp.data, "-attime", str(int(stamped.timestamp())))
    assert at_stamp.returncode == 0 and at_stamp.stdout == b"contract", at_stamp.stderr.decode()


def test_failures_fail_the_request_with_a_clear_error(services: Any, pki: Any, kit: Any) -> None:
    add_signer(services, pki, "NoTSA", implementation="CMSSigner", AUTHTYPE="NOAUTH", TSA_WORKER="Missing")
    with pytest.raises(TimeStampError, match=r"time-stamp from worker 'Missing' \(TSA_WORKER\) failed: no worker"):
        sign(services, "NoTSA", b"x")
    kit.add_tsa(services, pki, "BadTSA", eku="none")
    add_signer(services, pki, "ToBad", implementation="CMSSigner", AUTHTYPE="NOAUTH", TSA_WORKER="BadTSA")
    with pytest.raises(TimeStampError, match="Missing extended key usage timeStamping") as err:
        sign(services, "ToBad", b"x")
    assert err.value.status == 503
    kit.add_tsa(services, pki, "PickyTSA", ACCEPTEDALGORITHMS="SHA512")
    add_signer(services, pki, "ToPicky", implementation="CMSSigner", AUTHTYPE="NOAUTH", TSA_WORKER="PickyTSA")
    with pytest.raises(TimeStampError, match=r"refused the request: rejection \(bad_alg\): request contains unknown"):
        sign(services, "ToPicky", b"x")
    add_signer(services, pki, "ToPicky512", implementation="CMSSigner", AUTHTYPE="NOAUTH", TSA_WORKER="PickyTSA",
               TSA_DIGESTALGORITHM="SHA-512")
    assert signature_and_token(sign(services, "ToPicky512", b"x").data)


def test_requested_policy_reaches_the_token(services: Any, pki: Any, kit: Any, tmp_path: Path) -> None:
    kit.add_tsa(services, pki)
    add_signer(services, pki, "CMS", implementation="CMSSigner", AUTHTYPE="NOAUTH", TSA_WORKER="TSA",
               TSA_POLICYOID="1.2.3.4.5")
    _, token = signature_and_token(sign(services, "CMS", b"x").data)
    info = cms.ContentInfo.load(token)["content"]["encap_content_info"]["content"].parsed
    assert info["policy"].dotted == "1.2.3.4.5"
    assert cms.ContentInfo.load(token)["content"]["certificates"][0].chosen.dump() == services.runtime.get(
        "TSA").chain[0].public_bytes(serialization.Encoding.DER)

"""CMSSigner's request options (SignServer's semantics), each result checked by openssl.

Client-side hashing: the request data is the client's hash of the content; the answer is a
detached CMS whose signedAttrs messageDigest is that hash and whose signature verifies over the
original content. Options a worker does not support or allow are refused with 400, never ignored.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms

from signpeer_core.errors import BadRequestError, SignpeerError
from signpeer_core.pipeline import Caller, TransportRequest
from signpeer_core.testing import PKI, add_signer

CONTENT = b"the original content \x00\xff, which the client hashes itself\n" * 50
CALLER = Caller("tests")


def sign(services: Any, worker: str, data: bytes, **metadata: str) -> bytes:
    result = asyncio.run(services.pipeline.process(worker, TransportRequest(data, dict(metadata)), CALLER))
    return result.data


def refused(services: Any, worker: str, data: bytes, *words: str, **metadata: str) -> str:
    with pytest.raises(SignpeerError) as caught:
        sign(services, worker, data, **metadata)
    assert isinstance(caught.value, BadRequestError), caught.value
    assert caught.value.status == 400
    for word in words:
        assert word in caught.value.message, caught.value.message
    return caught.value.message


def openssl_verify(pki: PKI, tmp_path: Path, signature: bytes, content: bytes | None) -> subprocess.CompletedProcess[bytes]:
    (tmp_path / "sig.p7").write_bytes(signature)
    args = ["openssl", "cms", "-verify", "-CAfile", str(pki.ca_pem), "-inform", "DER", "-in", str(tmp_path / "sig.p7"),
            "-binary"]
    if content is not None:
        (tmp_path / "content").write_bytes(content)
        args += ["-content", str(tmp_path / "content")]
    return subprocess.run(args, capture_output=True, timeout=30)


def signer_info(signature: bytes) -> tuple[cms.SignedData, cms.SignerInfo]:
    signed = cms.ContentInfo.load(signature)["content"]
    return signed, signed["signer_infos"][0]


def message_digest(info: cms.SignerInfo) -> bytes:
    for attr in info["signed_attrs"]:
        if attr["type"].native == "message_digest":
            return attr["values"][0].native
    raise AssertionError("no messageDigest attribute")


@pytest.fixture
def workers(services: Any, pki: PKI) -> Any:
    add_signer(services, pki, "Attached", implementation="CMSSigner", AUTHTYPE="NOAUTH")
    add_signer(services, pki, "Overrides", implementation="CMSSigner", AUTHTYPE="NOAUTH",
               ALLOW_DETACHEDSIGNATURE_OVERRIDE="true", ALLOW_CLIENTSIDEHASHING_OVERRIDE="true",
               ACCEPTED_HASH_DIGEST_ALGORITHMS="SHA-256,SHA-384", ALLOW_CONTENTOID_OVERRIDE="true")
    add_signer(services, pki, "ClientHash", implementation="CMSSigner", AUTHTYPE="NOAUTH", keyalg="RSA",
               keyspec="2048", DETACHEDSIGNATURE="true", CLIENTSIDEHASHING="true",
               ACCEPTED_HASH_DIGEST_ALGORITHMS="SHA-256, SHA-512")
    add_signer(services, pki, "Plain", AUTHTYPE="NOAUTH")
    return services


@pytest.mark.parametrize("worker,digest,algorithm,extra", [
    ("ClientHash", "sha512", "SHA-512", {}),
    ("ClientHash", "sha256", "SHA256", {}),
    ("Overrides", "sha384", "SHA-384", {"USING_CLIENTSUPPLIED_HASH": "true", "DETACHEDSIGNATURE": "true"}),
])
def test_client_supplied_hash_verifies_over_the_original_content(
        workers: Any, pki: PKI, tmp_path: Path, worker: str, digest: str, algorithm: str, extra: dict[str, str]) -> None:
    supplied = hashlib.new(digest, CONTENT).digest()
    signature = sign(workers, worker, supplied, CLIENTSIDE_HASHDIGESTALGORITHM=algorithm, **extra)
    signed, info = signer_info(signature)
    assert signed["encap_content_info"]["content"].native is None  # detached
    assert message_digest(info) == supplied
    assert info["digest_algorithm"]["algorithm"].native == digest
    ok = openssl_verify(pki, tmp_path, signature, CONTENT)
    assert ok.returncode == 0 and b"Verification successful" in ok.stderr, ok.stderr
    # Over anything else (the hash bytes themselves, changed content) it does not verify.
    assert openssl_verify(pki, tmp_path, signature, supplied).returncode != 0
    assert openssl_verify(pki, tmp_path, signature, CONTENT + b"!").returncode != 0


def test_client_hash_errors_are_400(workers: Any) -> None:
    good = hashlib.sha256(CONTENT).digest()
    refused(workers, "ClientHash", good, "CLIENTSIDE_HASHDIGESTALGORITHM")
    refused(workers, "ClientHash", hashlib.sha384(CONTENT).digest(), "not accepted", "SHA256, SHA512",
            CLIENTSIDE_HASHDIGESTALGORITHM="SHA-384")
    refused(workers, "ClientHash", good[:-1], "32 bytes", CLIENTSIDE_HASHDIGESTALGORITHM="SHA-256")
    refused(workers, "ClientHash", good, "MD-5", CLIENTSIDE_HASHDIGESTALGORITHM="MD-5")
    # The worker's own setting may be restated, not changed, without the override.
    refused(workers, "ClientHash", CONTENT, "ALLOW_CLIENTSIDEHASHING_OVERRIDE", USING_CLIENTSUPPLIED_HASH="false")
    sign(workers, "ClientHash", good, USING_CLIENTSUPPLIED_HASH="true", CLIENTSIDE_HASHDIGESTALGORITHM="SHA-256")
    # A client-supplied hash makes a detached signature only.
    refused(workers, "Overrides", hashlib.sha256(CONTENT).digest(), "detached", USING_CLIENTSUPPLIED_HASH="true",
            CLIENTSIDE_HASHDIGESTALGORITHM="SHA-256")
    refused(workers, "Overrides", CONTENT, "true or false", USING_CLIENTSUPPLIED_HASH="maybe")
    # An algorithm without a hash to go with it would be ignored: refused.
    refused(workers, "Overrides", CONTENT, "USING_CLIENTSUPPLIED_HASH", CLIENTSIDE_HASHDIGESTALGORITHM="SHA-256")


def test_options_a_worker_does_not_allow_are_400(workers: Any) -> None:
    digest = hashlib.sha256(CONTENT).digest()
    # Today these were ignored: a CMS over the hash bytes, attached, with 200.
    refused(workers, "Attached", digest, "USING_CLIENTSUPPLIED_HASH", USING_CLIENTSUPPLIED_HASH="true",
            CLIENTSIDE_HASHDIGESTALGORITHM="SHA-256")
    refused(workers, "Attached", CONTENT, "ALLOW_DETACHEDSIGNATURE_OVERRIDE", DETACHEDSIGNATURE="true")
    refused(workers, "Attached", CONTENT, "ALLOW_CONTENTOID_OVERRIDE", CONTENTOID="1.2.3.4")
    refused(workers, "Overrides", CONTENT, "dotted", CONTENTOID="not an oid")
    refused(workers, "Plain", digest, "does not support", "USING_CLIENTSUPPLIED_HASH", USING_CLIENTSUPPLIED_HASH="true")
    refused(workers, "Plain", CONTENT, "DETACHEDSIGNATURE", detachedsignature="true")
    # Restating the configured value is no override; other metadata passes through.
    sign(workers, "Attached", CONTENT, DETACHEDSIGNATURE="false", CONTENTOID="1.2.840.113549.1.7.1", note="hi")


def test_detached_override_and_content_oid(workers: Any, pki: PKI, tmp_path: Path) -> None:
    detached = sign(workers, "Overrides", CONTENT, DETACHEDSIGNATURE="true")
    assert signer_info(detached)[0]["encap_content_info"]["content"].native is None
    assert openssl_verify(pki, tmp_path, detached, CONTENT).returncode == 0
    attached = sign(workers, "Overrides", CONTENT)
    out = openssl_verify(pki, tmp_path, attached, None)
    assert out.returncode == 0 and out.stdout == CONTENT, out.stderr
    typed = sign(workers, "Overrides", CONTENT, CONTENTOID="1.2.3.4.5")
    signed, info = signer_info(typed)
    assert signed["encap_content_info"]["content_type"].dotted == "1.2.3.4.5"
    assert [a["values"][0].dotted for a in info["signed_attrs"] if a["type"].native == "content_type"] == ["1.2.3.4.5"]
    out = openssl_verify(pki, tmp_path, typed, None)
    assert out.returncode == 0 and out.stdout == CONTENT, out.stderr


def test_client_hashing_without_accepted_digests_is_offline(services: Any, pki: PKI) -> None:
    add_signer(services, pki, "NoDigests", implementation="CMSSigner", AUTHTYPE="NOAUTH", DETACHEDSIGNATURE="true",
               CLIENTSIDEHASHING="true")
    reasons = services.runtime.get("NoDigests").status().reasons
    assert any("ACCEPTED_HASH_DIGEST_ALGORITHMS" in r for r in reasons), reasons


def test_the_client_side_hashing_example_of_rest_api_md_works(home: Path, pki: PKI, start_server: Any,
                                                              tmp_path: Path) -> None:
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "rest-api.md").read_text()
    section = text.split("### Request options", 1)[1]
    setup = re.findall(r"```\n(signpeer setproperty .*?)```", section, flags=re.S)[0]
    script = re.findall(r"```sh\n(.*?)```", section, flags=re.S)[0]
    from signpeer_core.testing import open_services

    services = open_services(home)
    try:
        add_signer(services, pki, "HashSigner", implementation="CMSSigner", AUTHTYPE="NOAUTH")
        props = dict(line.split()[3:5] for line in setup.splitlines() if line.startswith("signpeer setproperty"))
        services.store.update_worker(services.runtime.get("HashSigner").id, props)
    finally:
        services.close()
    server = start_server(home)
    (tmp_path / "document.pdf").write_bytes(CONTENT)
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "CA": str(pki.ca_pem), "URL": server.url})
    assert out.returncode == 0 and b"Verification successful" in out.stderr, out.stderr
    assert message_digest(signer_info((tmp_path / "document.p7s").read_bytes())[1]) == hashlib.sha256(CONTENT).digest()

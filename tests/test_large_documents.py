"""Large documents: attached CMS written with the content copied once, and the body limit's 413.

``bench/bench_documents.py`` measures throughput and peak memory (docs/performance.md); these
check that what it measures is right: the attached CMS that ``sign_cms`` writes without letting
asn1crypto encode the content is exactly the DER asn1crypto would write, verified by openssl at
length boundaries; and a body over ``max_body_size`` is a 413 naming the limit and the setting on
every transport, whether it announces its length or streams in chunks.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asn1crypto import cms

from signpeer_core import devpki
from signpeer_core.cms import sign_cms
from signpeer_core.keys import signature_algorithm
from signpeer_core.testing import PKI, add_signer, open_services, write_home
from signpeer_core.testing.processes import client_context

LIMIT = 3_000_000


@pytest.mark.parametrize("size", [0, 1, 127, 128, 255, 256, 65_535, 65_536, 16_777_216 + 3])
def test_an_attached_signature_is_the_der_asn1crypto_writes_and_openssl_verifies(
        pki: PKI, tmp_path: Path, size: int) -> None:
    key = devpki.new_key()
    cert = pki.issue_signer(key.public_key(), "CN=Attached, O=signpeer tests")
    content = bytes(i % 251 for i in range(size))
    der = sign_cms(content, key, signature_algorithm("SHA256withECDSA"), cert, [cert, pki.ca_cert])
    info = cms.ContentInfo.load(der)
    assert info.dump(force=True) == der  # every length and tag as asn1crypto (DER) encodes them
    assert info["content"]["encap_content_info"]["content"].native == content
    (tmp_path / "sig.p7").write_bytes(der)
    done = subprocess.run(["openssl", "cms", "-verify", "-CAfile", str(pki.ca_pem), "-inform", "DER", "-binary",
                           "-in", str(tmp_path / "sig.p7"), "-out", str(tmp_path / "out")], capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out").read_bytes() == content


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Any]:
    from signpeer_core.testing import ServerProcess

    home = write_home(tmp_path_factory.mktemp("large") / "home", pki, f"max_body_size = {LIMIT}\n")
    services = open_services(home)
    try:
        add_signer(services, pki, "Plain", AUTHTYPE="NOAUTH")
        add_signer(services, pki, "Attached", implementation="CMSSigner", AUTHTYPE="NOAUTH")
    finally:
        services.close()
    proc = ServerProcess(home, (), None).start()
    yield proc
    proc.stop()


def _chunks(total: int) -> Iterator[bytes]:
    for _ in range(total // 10_000):
        yield b"\0" * 10_000


@pytest.mark.parametrize("how", ["json", "multipart", "raw", "raw-chunked"])
def test_a_body_over_max_body_size_is_a_413_naming_the_limit_and_the_setting(
        server: Any, pki: PKI, how: str) -> None:
    over = LIMIT + 10_000
    with httpx.Client(base_url=server.url, verify=client_context(pki.ca_pem), timeout=30,
                      headers={"X-Keyfactor-Requested-With": "tests"}) as client:
        if how == "json":
            r = client.post("/signserver/rest/v1/workers/Plain/process",
                            content=b'{"data":"' + b"A" * over + b'","encoding":"BASE64"}',
                            headers={"Content-Type": "application/json"})
        elif how == "multipart":
            r = client.post("/signserver/rest/v1/workers/Plain/process", files={"file": ("doc", b"\0" * over)})
        elif how == "raw":
            r = client.post("/signserver/worker/Plain", content=b"\0" * over)
        else:
            r = client.post("/signserver/worker/Plain", content=_chunks(over))
        assert r.status_code == 413, r.text
        message = r.json()["error"]
        assert f"limit of {LIMIT} bytes" in message and "max_body_size" in message
        assert "SIGNPEER_MAX_BODY_SIZE" in message
        # Just under the limit signs.
        ok = client.post("/signserver/worker/Plain", content=b"\0" * (LIMIT - 1000))
        assert ok.status_code == 200 and len(ok.content) > 60


def test_a_large_result_over_json_is_streamed_whole_and_verifies(server: Any, pki: PKI, tmp_path: Path) -> None:
    import base64

    content = bytes(range(256)) * 6000  # 1.5 MB: the answer is base64-encoded piece by piece
    with httpx.Client(base_url=server.url, verify=client_context(pki.ca_pem), timeout=60) as client:
        r = client.post("/signserver/rest/v1/workers/Attached/process",
                        json={"data": base64.b64encode(content).decode(), "encoding": "BASE64"})
    assert r.status_code == 200, r.text
    assert int(r.headers["content-length"]) == len(r.content)
    answer = r.json()
    assert answer["requestId"] and answer["signerCertificate"]
    (tmp_path / "sig.p7").write_bytes(base64.b64decode(answer["data"]))
    done = subprocess.run(["openssl", "cms", "-verify", "-CAfile", str(pki.ca_pem), "-inform", "DER", "-binary",
                           "-in", str(tmp_path / "sig.p7"), "-out", str(tmp_path / "out")], capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out").read_bytes() == content

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


def _same_reading(body: bytes) -> tuple[bytes, dict[str, str]] | str:
    """What the large-body reader gives for ``body``, after checking it is what the usual parser
    gives (the result, or the same refusal)."""
    from signpeer_core.errors import BadRequestError
    from signpeer_core.httpserver import json_object
    from signpeer_core.processjson import LARGE_BODY
    from signpeer_core.processjson import parse_process_request as _parse_process_request
    from signpeer_core.processjson import process_request_of as _process_request_of

    assert len(body) >= LARGE_BODY
    outcomes = []
    for read in (lambda: _process_request_of(bytearray(body)), lambda: _parse_process_request(json_object(body))):
        try:
            outcomes.append(read())
        except BadRequestError as exc:
            outcomes.append(f"{exc.status} {exc.message}")
    assert outcomes[0] == outcomes[1]
    return outcomes[0]


DOC = bytes(range(256)) * 4000  # 1 MB: its base64 JSON is over LARGE_BODY


def test_a_large_json_body_is_read_as_the_usual_parser_reads_it() -> None:
    import base64

    b64 = base64.b64encode(DOC)
    assert _same_reading(b'{"encoding":"BASE64","data":"' + b64 + b'"}') == (DOC, {})
    assert _same_reading(b' {"data" : "' + b64 + b'", "encoding": "base64", "metaData": {"k": "v"}}\n') == (
        DOC, {"k": "v"})
    assert _same_reading(b'\xef\xbb\xbf{"data":"' + b64 + b'","encoding":"BASE64"}') == (DOC, {})  # UTF-8 BOM
    # Escapes, spaces or line breaks in the base64, another encoding: the usual path reads them.
    slashes = b64.replace(b"/", b"\\/")
    assert _same_reading(b'{"data":"' + slashes + b'","encoding":"BASE64"}') == (DOC, {})
    lines = b"\\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
    assert _same_reading(b'{"data":"' + lines + b'","encoding":"BASE64"}') == (DOC, {})
    assert _same_reading(b'{"data":"' + b64[:1000] + b" " + b64[1000:] + b'","encoding":"BASE64"}') == (DOC, {})
    assert _same_reading(b'{"data":"' + b64 + b'"}') == (b64, {})  # encoding NONE: the text itself
    # A "data" that is not the object's own, or a later one that replaces it.
    assert _same_reading(b'{"metaData":{"data":"' + b64 + b'"},"data":"AAAA","encoding":"BASE64"}') == (
        b"\0\0\0", {"data": b64.decode()})
    assert _same_reading(b'{"data":"' + b64 + b'","encoding":"BASE64","data":"AAAA"}') == (b"\0\0\0", {})
    assert _same_reading(b'{"x":"\\"data\\":\\"","data":"' + b64 + b'","encoding":"BASE64"}') == (DOC, {})


@pytest.mark.parametrize("body", [
    b'{"data":"!' + b"A" * 1_100_000 + b'","encoding":"BASE64"}',  # not base64
    b'{"data":"' + b"A" * 1_100_001 + b'","encoding":"BASE64"}',  # bad length
    b'{"data":"' + b"A" * 1_100_000 + b'","encoding":"BASE64","metaData":{"k":1}}',
    b'{"data":"' + b"A" * 1_100_000 + b'","encoding":"BASE64","metaData":{"k": "a\\u0000b"}}',
    b'{"data":"' + b"A" * 1_100_000 + b'","encoding":"HEX"}',
    b'{"data":"' + b"A" * 1_100_000 + b'","encoding":7}',
    b'{"data":"' + b"A" * 1_100_000 + b'","encoding":"BASE64",}',  # invalid JSON
    b'{"data":"' + b"A" * 1_100_000 + b'\x01","encoding":"BASE64"}',  # a control character
    b'[{"data":"' + b"A" * 1_100_000 + b'","encoding":"BASE64"}]',
    b'{"data":"' + b"A" * 1_100_000,
    b'{"data":' + b"1" * 1_100_000 + b',"encoding":"BASE64"}',
    b'{"nodata":"' + b"A" * 1_100_000 + b'","encoding":"BASE64"}',
], ids=["alphabet", "length", "metadata-value", "metadata-key", "encoding", "encoding-type", "json", "control",
        "array", "unterminated", "number", "missing"])
def test_a_large_json_body_is_refused_as_the_usual_parser_refuses_it(body: bytes) -> None:
    refusal = _same_reading(body)
    assert isinstance(refusal, str) and refusal.startswith("400 "), refusal


PEAK_DOC = 6 * 1024 * 1024


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Any]:
    """A server that takes documents of a few MiB. ``MALLOC_MMAP_THRESHOLD_`` fixes glibc's
    threshold for giving large blocks their own mapping (by default it rises to the size of the
    largest block freed, up to 32 MiB, after which a freed document stays in the heap and counts
    in every later request's peak): each request's peak is then its own, as it is for documents
    over 32 MiB whatever the setting."""
    from signpeer_core.testing import ServerProcess

    home = write_home(tmp_path_factory.mktemp("roomy") / "home", pki, "max_body_size = 33554432\n")
    services = open_services(home)
    try:
        add_signer(services, pki, "Plain", AUTHTYPE="NOAUTH")
        add_signer(services, pki, "Attached", implementation="CMSSigner", AUTHTYPE="NOAUTH")
        add_signer(services, pki, "Detached", implementation="CMSSigner", AUTHTYPE="NOAUTH", DETACHEDSIGNATURE="true")
    finally:
        services.close()
    proc = ServerProcess(home, (), {"MALLOC_MMAP_THRESHOLD_": "131072"}).start()
    yield proc
    proc.stop()


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.mark.parametrize("worker,transport", [
    ("Plain", "json"), ("Attached", "json"), ("Detached", "json"),
    ("Attached", "raw"), ("Attached", "multipart"), ("Detached", "raw"),
])
def test_signing_a_large_document_peaks_under_three_times_its_size_and_verifies(
        roomy: Any, pki: PKI, tmp_path: Path, worker: str, transport: str) -> None:
    import base64
    import os

    document = os.urandom(PEAK_DOC)
    (tmp_path / "doc").write_bytes(document)
    pid = roomy.proc.pid

    def sign(client: httpx.Client) -> tuple[bytes, str | None]:
        if transport == "json":
            r = client.post(f"/signserver/rest/v1/workers/{worker}/process",
                            content=b'{"encoding":"BASE64","data":"' + base64.b64encode(document) + b'"}',
                            headers={"Content-Type": "application/json"})
            assert r.status_code == 200, r.text
            return base64.b64decode(r.json()["data"]), r.json()["signerCertificate"]
        if transport == "multipart":
            r = client.post(f"/signserver/rest/v1/workers/{worker}/process", files={"file": ("doc", document)})
        else:
            r = client.post(f"/signserver/worker/{worker}", content=document)
        assert r.status_code == 200, r.text
        assert int(r.headers["content-length"]) == len(r.content)
        return r.content, None

    with httpx.Client(base_url=roomy.url, verify=client_context(pki.ca_pem), timeout=120,
                      headers={"X-Keyfactor-Requested-With": "tests"}) as client:
        sign(client)  # the first request of a kind builds what later ones reuse
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        except OSError as exc:
            pytest.skip(f"cannot reset the server's peak memory here: {exc}")
        before = _status_kib(pid, "VmRSS")
        result, cert = sign(client)
        peak = (_status_kib(pid, "VmHWM") - before) * 1024
    assert peak <= 3 * PEAK_DOC, f"peak {peak / PEAK_DOC:.2f}x the document"
    (tmp_path / "sig").write_bytes(result)
    if worker == "Plain":
        assert cert is not None
        (tmp_path / "cert.der").write_bytes(base64.b64decode(cert))
        pub = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(tmp_path / "cert.der"), "-pubkey",
                              "-noout", "-out", str(tmp_path / "pub.pem")], capture_output=True, timeout=60)
        assert pub.returncode == 0, pub.stderr
        done = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"), "-signature",
                               str(tmp_path / "sig"), str(tmp_path / "doc")], capture_output=True, timeout=60)
    else:
        command = ["openssl", "cms", "-verify", "-CAfile", str(pki.ca_pem), "-inform", "DER", "-binary",
                   "-in", str(tmp_path / "sig"), "-out", str(tmp_path / "out")]
        if worker == "Detached":
            command += ["-content", str(tmp_path / "doc")]
        done = subprocess.run(command, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    if worker == "Attached":
        assert (tmp_path / "out").read_bytes() == document

"""The TSA over HTTP with a running ``signpeer serve``: SignServer's ``/signserver/tsa?workerName=``
(RFC 3161 §3.4), the REST ``/process`` API, a burst over two server processes, and a CMS signer
stamping through ``TSA_URL``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from asn1crypto import cms

from signpeer_core.errors import TimeStampError
from signpeer_core.testing import add_signer
from signpeer_core.timestamping import TimeStampResponse, build_request
from signpeer_core.workers import SignRequest

QUERY = {"Content-Type": "application/timestamp-query"}


def test_signserver_tsa_path(services: Any, pki: Any, kit: Any, home: Path, tmp_path: Path, start_server: Any,
                             https_client: Any) -> None:
    kit.add_tsa(services, pki)
    server = start_server(home)
    client = https_client(server)
    query = kit.ts_query(tmp_path, b"over http", "-cert")
    answer = client.post("/signserver/tsa?workerName=TSA", content=query.read_bytes(), headers=QUERY)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/timestamp-reply"
    verified = kit.ts_verify(tmp_path, query, answer.content, pki)
    assert verified.returncode == 0, verified.stderr.decode()
    wid = services.runtime.get("TSA").id
    by_id = client.post(f"/signserver/tsa?workerId={wid}", content=query.read_bytes(), headers=QUERY)
    assert by_id.status_code == 200 and kit.ts_verify(tmp_path, query, by_id.content, pki).returncode == 0
    # A rejection is still a reply (200, RFC 3161 §2.4.2), with its failure info
    refused = client.post("/signserver/tsa?workerName=TSA", content=b"\x30\x00", headers=QUERY)
    assert refused.status_code == 200 and "Status: Rejected." in kit.reply_text(tmp_path, refused.content)
    # Errors before a reply exists
    assert client.post("/signserver/tsa?workerName=Nope", content=query.read_bytes(), headers=QUERY).status_code == 404
    missing = client.post("/signserver/tsa", content=query.read_bytes(), headers=QUERY)
    assert missing.status_code == 400 and "workerName" in missing.text
    empty = client.post("/signserver/tsa?workerName=TSA", content=b"", headers=QUERY)
    assert empty.status_code == 400 and "Request must contain data" in empty.text
    assert "worker=TSA" in server.log() and "status=granted serial=" in server.log()


def test_rest_process(services: Any, pki: Any, kit: Any, home: Path, tmp_path: Path, start_server: Any,
                      https_client: Any) -> None:
    kit.add_tsa(services, pki)
    client = https_client(start_server(home))
    query = kit.ts_query(tmp_path, b"rest", "-cert")
    answer = client.post("/signserver/rest/v1/workers/TSA/process",
                         json={"data": base64.b64encode(query.read_bytes()).decode(), "encoding": "BASE64"})
    assert answer.status_code == 200, answer.text
    reply = base64.b64decode(answer.json()["data"])
    verified = kit.ts_verify(tmp_path, query, reply, pki)
    assert verified.returncode == 0, verified.stderr.decode()


def test_burst_over_two_server_processes_every_serial_differs(services: Any, pki: Any, kit: Any, home: Path,
                                                              start_server: Any) -> None:
    kit.add_tsa(services, pki)
    server = start_server(home, "--workers", "2")
    request = build_request("sha256", hashlib.sha256(b"burst").digest(), nonce=5)

    async def burst() -> list[bytes]:
        import ssl

        context = ssl.create_default_context(cafile=str(pki.ca_pem))
        # Many connections, so that both processes take some
        clients = [httpx.AsyncClient(base_url=server.url, verify=context, timeout=120) for _ in range(16)]
        try:
            answers = await asyncio.gather(*[
                clients[i % 16].post("/signserver/tsa?workerName=TSA", content=request, headers=QUERY)
                for i in range(320)])
        finally:
            for c in clients:
                await c.aclose()
        assert all(a.status_code == 200 for a in answers)
        return [a.content for a in answers]

    replies = asyncio.run(burst())
    serials = [TimeStampResponse.load(r)["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed[
        "serial_number"].native for r in replies]
    assert len(set(serials)) == len(serials) == 320
    processes = {s & ((1 << 22) - 1) for s in serials}  # the process field of the serials
    assert 1 <= len(processes) <= 2


def test_cms_signer_with_tsa_url(services: Any, pki: Any, kit: Any, home: Path, tmp_path: Path,
                                 start_server: Any) -> None:
    kit.add_tsa(services, pki, AUTHTYPE="NOAUTH")
    server = start_server(home)
    add_signer(services, pki, "Remote", implementation="CMSSigner", AUTHTYPE="NOAUTH",
               TSA_URL=f"{server.url}/signserver/tsa?workerName=TSA", TSA_CAFILE=str(pki.ca_pem))
    worker = services.runtime.get("Remote")
    resp = asyncio.run(worker.process(SignRequest(data=b"remote stamp", request_id="u1")))
    signer = cms.ContentInfo.load(resp.data)["content"]["signer_infos"][0]
    token = next(a for a in signer["unsigned_attrs"] if a["type"].native == "signature_time_stamp_token")
    path = tmp_path / "token.der"
    path.write_bytes(token["values"][0].dump())
    out = kit.openssl("ts", "-verify", "-digest", hashlib.sha256(signer["signature"].native).hexdigest(),
                      "-in", str(path), "-token_in", "-CAfile", str(pki.ca_pem), check=False)
    assert out.returncode == 0, out.stderr.decode()
    # The wrong worker name: the TSA's 404 in the error
    add_signer(services, pki, "RemoteBad", implementation="CMSSigner", AUTHTYPE="NOAUTH",
               TSA_URL=f"{server.url}/signserver/tsa?workerName=Nope", TSA_CAFILE=str(pki.ca_pem))
    with pytest.raises(TimeStampError) as err:
        asyncio.run(services.runtime.get("RemoteBad").process(SignRequest(data=b"x", request_id="u2")))
    assert "no worker 'Nope'" in err.value.message and "(HTTP 404)" in err.value.message
    assert "TSA_URL" in err.value.message

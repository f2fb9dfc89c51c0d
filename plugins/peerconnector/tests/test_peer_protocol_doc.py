"""docs/peer-protocol.md works as written: its walk-through runs with curl and openssl alone.

The ```bash blocks of the document are run, in order, as one bash script against a real
server; then the result is checked through the protocol. A second test keeps the OpenAPI
document and the prose in step with the routes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from signpeer_core.testing import add_signer, open_services
from signpeer_peerconnector.client import PeerClient
from signpeer_peerconnector.openapi import openapi_document
from signpeer_peerconnector.protocol import BASE_PATH

REPO = Path(__file__).resolve().parents[3]
DOC = REPO / "docs" / "peer-protocol.md"


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")), reason="needs curl and openssl")
def test_walkthrough_renews_with_curl_and_openssl(
        home: Path, pki: Any, peer: Any, issuing_ca: Any, start_server: Any, signpeer: Any, tmp_path: Path) -> None:
    services = open_services(home)
    try:
        add_signer(services, pki, "Signer1", PEERS_VISIBLE="true")
    finally:
        services.close()
    assert signpeer("wspeersystems", "-add", "-cert", str(peer.pem))[0] == 0
    assert signpeer("setproperty", "global", "PEERS_INCOMING_ENABLED", "true")[0] == 0
    server = start_server(home)

    blocks = bash_blocks(DOC.read_text())
    assert len(blocks) >= 6
    script = "set -euo pipefail\n" + "\n".join(blocks)
    work = tmp_path / "walk"
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "SERVER": server.url, "SERVER_CA": str(pki.ca_pem), "PEER_CERT": str(peer.pem),
           "PEER_KEY": str(peer.key_pem), "CA_CERT": str(issuing_ca[0]), "CA_KEY": str(issuing_ca[1]),
           "BINDING": "Signer1"}
    run = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, timeout=120)
    out = run.stdout.decode()
    assert run.returncode == 0, f"{out}\n{run.stderr.decode()}\n{server.log()[-3000:]}"
    assert '"promoted":true' in out and "Certificate request self-signature verify OK" in run.stderr.decode()

    signer = x509.load_pem_x509_certificate((work / "signer.pem").read_bytes())
    with PeerClient(server.url, peer.pem, peer.key_pem, pki.ca_pem) as client:
        b = client.get_binding("Signer1")
    assert (b["keyPairAlias"], b["nextKeyPairAlias"], b["operationalStatus"]) == ("signer00002", None, "ONLINE")
    assert b["certificateId"] == signer.fingerprint(hashes.SHA1()).hex()
    fingerprint = re.search(r"SHA1 Fingerprint=([0-9A-F:]+)", out, re.I).group(1).replace(":", "").lower()
    assert fingerprint == b["certificateId"]


def test_openapi_and_doc_cover_every_route(home: Path) -> None:
    from signpeer_peerconnector.routes import _extra_routes, routes

    services = open_services(home)
    try:
        # Other plugins' operations (RA mode, through signpeer_peer_routes) document themselves.
        extra = {r.path for r in _extra_routes(services)}
        paths = {r.path[len(BASE_PATH):] for r in routes(services) if r.path.startswith(BASE_PATH + "/")} - extra
    finally:
        services.close()
    documented = set(openapi_document("test")["paths"])
    assert paths == documented
    text = DOC.read_text()
    for path in paths:
        assert f" {path}" in text.replace("`", " "), path

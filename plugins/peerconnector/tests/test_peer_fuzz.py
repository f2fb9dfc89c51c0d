"""Property-based fuzzing of the peer endpoint: schemathesis against the OpenAPI document it
serves, as an authorized CA peer over mutual TLS. No answer may be a 5xx or undocumented, and
the server log must hold no traceback. Bounded for CI (``FUZZ_EXAMPLES`` per operation).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from signpeer_core.testing import add_signer, client_context, open_services, wait_until
from signpeer_core.testing.fuzz import fuzz_openapi, server_errors

PEER = "/signserver/peer/v1"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
#: The RA long poll waits up to a minute by design (its bounds are the RA tests' business).
LONG_POLLS = {"/ra/claim"}


def test_peer_endpoint_fuzz(home: Path, pki: Any, peer: Any, signpeer: Any, start_server: Any) -> None:
    services = open_services(home)
    try:
        add_signer(services, pki, "FuzzBinding", PEERS_VISIBLE="true", KEYALG="ECDSA", KEYSPEC="secp256r1")
        add_signer(services, pki, "FuzzCMSBinding", implementation="CMSSigner", PEERS_VISIBLE="true")
    finally:
        services.close()
    for args in (("wspeersystems", "-add", "-cert", str(peer.pem)),
                 ("setproperty", "global", "PEERS_INCOMING_ENABLED", "true")):
        code, _, err = signpeer(*args)
        assert code == 0, err
    server = start_server(home)
    ctx = client_context(pki.ca_pem, (str(peer.pem), str(peer.key_pem)))
    with httpx.Client(base_url=server.url + PEER, verify=ctx, timeout=30) as client:
        wait_until(lambda: client.get("/ping").status_code == 200, 30)
        document = client.get("/openapi.json").json()
    # The document describes the endpoint relative to its base path (servers[0].url).
    calls = fuzz_openapi(document, server.url + PEER, str(pki.ca_pem), (str(peer.pem), str(peer.key_pem)),
                         examples=EXAMPLES, exclude=LONG_POLLS)
    assert calls >= EXAMPLES
    assert server_errors(server.log()) == []

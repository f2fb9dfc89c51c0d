"""The incoming-connections registry is the cluster's: a peer refused on node a is listed (with the
node that saw it) from node b, authorized there, and accepted on both nodes once ``reload``
returns. Two ``signpeer serve`` nodes on one real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from signpeer_core.testing import wait_until, write_home
from signpeer_core.testing.fixtures import CliRunner
from signpeer_core.testing.postgres import PostgresServer
from signpeer_peerconnector.client import PeerClient, PeerUnauthorized


def test_peer_refused_on_a_authorized_from_b_is_accepted_on_both(tmp_path: Path, pki: Any, postgres: PostgresServer,
                                                                   start_server: Any) -> None:
    url = postgres.fresh_url()
    homes = {name: write_home(tmp_path / name, pki, settings=f'database_url = "{url}"\nnode_id = "{name}"\n')
             for name in ("a", "b")}
    node_a, node_b = start_server(homes["a"]), start_server(homes["b"])
    peer = pki.issue_client("Cluster Peer", dn_suffix=", O=signpeer tests")
    on_b = CliRunner(homes["b"])

    with PeerClient(node_a.url, peer.pem, peer.key_pem, pki.ca_pem) as client_a:
        with pytest.raises(PeerUnauthorized):
            client_a.ping()
        rows = wait_until(lambda: json.loads(on_b("peers", "incoming", "--json").out)["incoming"], timeout=30,
                          what="the refused call in the registry, seen from node b")
        assert [(r["subject"], r["node"], r["authorized"]) for r in rows] == [
            ("CN=Cluster Peer, O=signpeer tests", "a", False)]
        assert " a " in on_b("peers", "incoming").out

        assert on_b("peers", "authorize", str(rows[0]["id"])).code == 0
        assert on_b("setproperty", "global", "PEERS_INCOMING_ENABLED", "true").code == 0
        r = on_b("reload", "all")
        assert r.code == 0 and "Applied by 2 server process(es) on 2 node(s)" in r.out, r.out + r.err
        assert client_a.ping()["peer"]["serial"] == format(peer.cert.serial_number, "x")
    with PeerClient(node_b.url, peer.pem, peer.key_pem, pki.ca_pem) as client_b:
        assert client_b.ping()["version"] == "v1"

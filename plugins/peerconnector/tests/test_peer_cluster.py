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
    homes = {name: write_home(tmp_path / name, pki, settings=f'database_url = "{url}"\nnode_id = "{name}"\n'
                      f'key_file = "{tmp_path / "cluster.key"}"\n')  # every node: the key of the database
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


def test_postgresql_restart_during_renewals(tmp_path: Path, pki: Any, peer: Any, issuing_ca: Any,
                                            start_server: Any) -> None:
    """A signer on an INTERNAL keystore (in PostgreSQL) keeps signing while PostgreSQL restarts under
    its renewals: each renewal completes or fails clearly leaving the old key, and the next succeeds."""
    import base64
    import threading

    import httpx

    from signpeer_core.certificates import encode_certificate_property
    from signpeer_core.issuing import IssuingCA
    from signpeer_core.testing import PASSWORD, client_context, open_services
    from signpeer_core.testing.postgres import accepting
    from signpeer_peerconnector.client import renew

    pg = PostgresServer().start()  # its own: this test stops and starts it
    try:
        home = write_home(tmp_path / "solo", pki, settings=f'database_url = "{pg.fresh_url()}"\n'
                      f'key_file = "{tmp_path / "cluster.key"}"\n')
        services = open_services(home)
        try:
            store = services.store
            store.update_worker(1, {"NAME": "Keys", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
                                    "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "SoftCryptoToken", "KEYSTORETYPE": "INTERNAL",
                                    "KEYSTOREPASSWORD": PASSWORD})
            services.runtime.load()
            token = services.runtime.get("Keys").token
            token.generate_key("key1", "ECDSA", "secp256r1")
            cert = pki.issue_signer(token.public_key("key1"), "CN=Renewed, O=signpeer tests")
            store.update_worker(2, {"NAME": "Renewed", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "PlainSigner",
                                    "CRYPTOTOKEN": "Keys", "DEFAULTKEY": "key1", "PEERS_VISIBLE": "true",
                                    "AUTHTYPE": "NOAUTH", "SIGNERCERTCHAIN": encode_certificate_property([cert])})
        finally:
            services.close()
        cli = CliRunner(home)
        assert cli("wspeersystems", "-add", "-cert", str(peer.pem)).code == 0
        assert cli("setproperty", "global", "PEERS_INCOMING_ENABLED", "true").code == 0
        server = start_server(home)
        ca = IssuingCA.from_files(issuing_ca[0], issuing_ca[1])
        failures: list[str] = []
        signed = [0]
        stop = threading.Event()

        def keep_signing() -> None:
            with httpx.Client(base_url=server.url, verify=client_context(pki.ca_pem), timeout=30,
                              headers={"X-Keyfactor-Requested-With": "tests"}) as rest:
                while not stop.is_set():
                    r = rest.post("/signserver/rest/v1/workers/Renewed/process",
                                  json={"data": base64.b64encode(b"doc").decode(), "encoding": "BASE64"})
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text}")
                    signed[0] += 1

        signer = threading.Thread(target=keep_signing)
        signer.start()
        outcomes = []
        try:
            with PeerClient(server.url, peer.pem, peer.key_pem, pki.ca_pem) as client:
                assert renew(client, ca, "Renewed", rekey=True).ok
                def renew_into(into: list[Any]) -> None:
                    into.append(renew(client, ca, "Renewed", rekey=True))

                def signed_past(count: int) -> bool:
                    return signed[0] >= count

                for _ in range(2):
                    result: list[Any] = []
                    renewal = threading.Thread(target=renew_into, args=(result,))
                    renewal.start()
                    pg.stop("fast")  # while the renewal runs
                    renewal.join(120)
                    outcomes.append(result[0])
                    wait_until(lambda count=signed[0] + 10: signed_past(count), timeout=30,
                               what="signatures while PostgreSQL is down")
                    pg.start()
                    wait_until(lambda: accepting(pg.url()), timeout=30, what="PostgreSQL back")
                    after = wait_until(lambda: (lambda r: r if r.ok else None)(renew(client, ca, "Renewed", rekey=True)),
                                       timeout=60, what="a renewal after the restart")
                    assert after.ok, after
                binding = client.get_binding("Renewed")
        finally:
            stop.set()
            signer.join(30)
        assert failures == [], failures[:3]
        for outcome in outcomes:  # completed, or failed with a message (never a 500)
            assert outcome.ok or ("(HTTP 500)" not in str(outcome.error) and outcome.error), outcome
        assert binding["keyPairAlias"] == after.key_alias and binding["status"] == "ACTIVE", binding
        assert "Traceback" not in server.log()
    finally:
        pg.close()

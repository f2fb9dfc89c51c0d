"""A renewal whose steps reach different processes of one server (``signpeer serve --workers N``).

The CA keeps several connections open, and each connection is served by one process: the CSR
may reach a process that has not yet loaded the key the ``nextkey`` call made in another one.
Two :class:`Services` on one data directory stand for two processes (no reload poller runs in
them, so the second one is behind unless the operation catches up itself).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from signpeer_core.services import Services
from signpeer_core.settings import load_settings
from signpeer_core.testing import PASSWORD, PKI, add_signer
from signpeer_core.testing.postgres import on_postgresql
from signpeer_peerconnector.authz import PeerIdentity
from signpeer_peerconnector.routes import PeerService

CA = PeerIdentity("CN=EJBCA Peer Connector, OU=Peers, O=signpeer tests", "CN=Test CA", 0x1F)


@pytest.fixture(params=["workers 2", "cluster"])
def processes(request: pytest.FixtureRequest, home: Path, services: Any) -> Iterator[tuple[Any, Any]]:
    """Two processes of a server started with ``--workers 2``, or (on PostgreSQL) two single-process
    nodes of a cluster on one database (``services`` set up the home)."""
    if request.param == "cluster":
        if not on_postgresql():
            pytest.skip("a cluster's nodes share a PostgreSQL database: runs in the PostgreSQL suite")
        opened = [Services.open(replace(load_settings(home), workers=1, node_id=node)) for node in ("a", "b")]
    else:
        opened = [Services.open(replace(load_settings(home), workers=2)) for _ in range(2)]
    try:
        yield opened[0], opened[1]
    finally:
        for s in opened:
            s.close()


def _pem(public_key: Any) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _soft_binding(services: Any, pki: PKI, name: str, **properties: str) -> int:
    """A worker with an EC key in its own INTERNAL soft token (a key binding with PEERS_VISIBLE)."""
    return add_signer(services, pki, name, KEYALG="ECDSA", KEYSPEC="secp256r1",
                      CRYPTOTOKEN_IMPLEMENTATION_CLASS="SoftCryptoToken", KEYSTORETYPE="INTERNAL",
                      KEYSTOREPASSWORD=PASSWORD, **properties)


def _loaded(processes: tuple[Any, Any]) -> tuple[Any, Any]:
    """Both processes with every worker loaded, as serving processes have them."""
    for s in processes:
        s.runtime.load()
    return processes


def _authorized_peer(services: Any, pki: PKI) -> Any:
    """A CA peer's client certificate, authorized in the global Peer Systems rules."""
    from signpeer_core.clientrules import ClientRule, serialize_rules

    peer = pki.issue_client("CA peer", dn_suffix=", O=signpeer CA")
    services.store.update_global({"GLOB.PEERS_INCOMING_ENABLED": "true",
                                  "GLOB.WSPEERS": serialize_rules([ClientRule.for_certificate(peer.cert)])})
    return peer


def test_each_step_in_another_process_finds_what_the_previous_one_made(
        services: Any, processes: tuple[Any, Any], pki: PKI) -> None:
    wid = _soft_binding(services, pki, "Renewed", PEERS_VISIBLE="true")
    a, b = _loaded(processes)
    first, second = PeerService(a), PeerService(b)

    answer = first.renewal.next_key(wid, CA)
    assert answer["created"] and answer["nextKeyPairAlias"] == "signer00002"
    # The CSR in the other process is for the key the first one made, signed by it.
    csr = second.renewal.csr(wid, CA)
    assert csr.alias == "signer00002" and csr.for_next_key
    from cryptography import x509
    request = x509.load_pem_x509_csr(csr.pem.encode())
    assert request.is_signature_valid and _pem(request.public_key()) == answer["publicKey"]
    assert second.bindings.get(wid)["nextKeyPairAlias"] == "signer00002"

    cert = pki.issue_signer(request.public_key(), "CN=Renewed, O=signpeer tests")
    installed = first.renewal.install(wid, CA, [cert, pki.ca_cert])  # and back in the first process
    assert installed["promoted"] and installed["keyPairAlias"] == "signer00002"
    # The next step in the second process sees the promoted key and asks for the one after it.
    again = second.renewal.next_key(wid, CA)
    assert again["created"] and again["nextKeyPairAlias"] == "signer00003"
    assert second.bindings.get(wid)["keyPairAlias"] == "signer00002"
    # No refused install was recorded on the way.
    events = [e for e in services.store.audit_events() if e.event == "CERTINSTALLED"]
    assert events and all(e.outcome == "SUCCESS" for e in events)


def test_a_single_process_server_reads_no_generation_before_an_operation(services: Any, pki: PKI) -> None:
    """With one process on SQLite nothing else publishes behind its back: no catch-up read (the
    statement counts of test_renewal_statements.py hold for it)."""
    if on_postgresql():
        pytest.skip("on PostgreSQL another node may publish: every operation catches up (test above)")
    wid = _soft_binding(services, pki, "Alone", PEERS_VISIBLE="true")
    from signpeer_core.testing import counted

    service = PeerService(services)
    with counted(services.store.database) as seen:
        service.renewal.csr(wid, CA)
    assert not [sql for sql in seen.sql if "config_generation" in sql], seen.sql


def test_a_listing_in_the_other_process_shows_the_install_made_in_the_first(
        services: Any, processes: tuple[Any, Any], pki: PKI) -> None:
    """The CA lists the bindings after its renew-all; the listing (and a binding's read) may
    reach the process that did not make the last installs and has not followed them yet (in a
    server, its reload follows notifications a moment later, at most every
    ``membership.STEP_SPACING`` during a burst; here no follower runs): it catches up first, as
    the renewal's own steps do."""
    from cryptography import x509

    from signpeer_core import devpki
    from signpeer_core.app import create_app
    from signpeer_core.issuing import IssuingCA
    from signpeer_core.testing.directapps import asgi_request

    peer = _authorized_peer(services, pki)
    _soft_binding(services, pki, "Listed", PEERS_VISIBLE="true")
    first, second = (create_app(s) for s in _loaded(processes))
    path = "/signserver/peer/v1/keybindings/Listed"
    created = asgi_request(first, "POST", path + "/nextkey", peer.cert, json={})
    assert created.status_code == 201, created.text
    csr = asgi_request(first, "POST", path + "/csr", peer.cert).json()["csr"]
    chain = devpki.cert_pem(*IssuingCA(*devpki.make_ca("CN=Listing Issuing CA")).issue(
        x509.load_pem_x509_csr(csr.encode())))
    installed = asgi_request(first, "PUT", path + "/certificate", peer.cert, content=chain,
                             headers={"Content-Type": "application/pem-certificate-chain"})
    assert installed.status_code == 200 and installed.json()["promoted"], installed.text
    alias = created.json()["nextKeyPairAlias"]

    read = asgi_request(second, "GET", path, peer.cert)  # before the listing, which would catch up too
    assert read.status_code == 200 and read.json()["keyPairAlias"] == alias, read.text

    again = asgi_request(first, "POST", path + "/nextkey", peer.cert, json={})  # and a new one there
    assert again.status_code == 201, again.text
    listing = asgi_request(second, "GET", "/signserver/peer/v1/keybindings", peer.cert)
    assert listing.status_code == 200, listing.text
    [listed] = [b for b in listing.json()["keyBindings"] if b["name"] == "Listed"]
    assert listed["nextKeyPairAlias"] == again.json()["nextKeyPairAlias"], listed


def test_a_binding_made_visible_in_the_other_process_is_found(
        services: Any, processes: tuple[Any, Any], pki: PKI) -> None:
    """An operation on a binding that another process exposed a moment ago (PEERS_VISIBLE set
    there, not yet followed here) finds it instead of answering 404."""
    from signpeer_core.administration import Change, publish
    from signpeer_core.app import create_app
    from signpeer_core.testing.directapps import asgi_request

    peer = _authorized_peer(services, pki)
    wid = _soft_binding(services, pki, "Hidden")
    a, b = _loaded(processes)
    second = create_app(b)
    path = "/signserver/peer/v1/keybindings/Hidden/nextkey"
    assert asgi_request(second, "POST", path, peer.cert, json={}).status_code == 404  # not exposed yet
    publish(a, Change().worker(wid, {"PEERS_VISIBLE": "true"}), [wid])  # exposed in the first process
    created = asgi_request(second, "POST", path, peer.cert, json={})
    assert created.status_code == 201, created.text

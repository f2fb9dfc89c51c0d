"""The incoming connections registry's table: batched sightings, counts and last-seen times."""

from __future__ import annotations

from pathlib import Path

from signpeer_core.storage import open_store
from signpeer_peerconnector.incoming_store import IncomingPeers, migration_source


def test_sightings_add_up_per_serial_issuer_and_address(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", [migration_source()])
    try:
        peers = IncomingPeers(store.database)
        peers.touch([("CN=Peer", "CN=CA", "0a", "127.0.0.1", 10.0, 1),
                     ("CN=Peer", "CN=CA", "0a", "127.0.0.2", 11.0, 2)])
        # A batch flushed late carries an older last-seen time: the newest one stays.
        peers.touch([("CN=Peer renamed", "CN=CA", "0a", "127.0.0.1", 20.0, 3)])
        peers.touch([("CN=Peer renamed", "CN=CA", "0a", "127.0.0.1", 15.0, 1)])
        peers.touch([])
        rows = [(p.subject, p.remote_address, p.first_seen, p.last_seen, p.count) for p in peers.all()]
        assert rows == [("CN=Peer", "127.0.0.2", 11.0, 11.0, 2), ("CN=Peer renamed", "127.0.0.1", 10.0, 20.0, 5)]
        first = peers.all()[1]
        assert peers.get(first.id) == first and peers.get(999) is None
        assert peers.remove(first.id) and not peers.remove(first.id)
        assert [p.remote_address for p in peers.all()] == ["127.0.0.2"]
    finally:
        store.close()

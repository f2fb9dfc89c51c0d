"""Databases made before per-owner migrations (one ``schema_version`` 1..4 in ``meta``) are adopted:
each owner is stamped at the revision that matches, upgraded from there, and no data is lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from signpeer_core.errors import ConfigurationError
from signpeer_core.storage import MigrationSource, open_store

# The schema as the store of signpeer 0.1 created it, copied from its MIGRATIONS (data, not code:
# these statements are what existing databases contain).
LEGACY_MIGRATIONS: dict[int, str] = {
    1: """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE worker_properties (
            worker_id INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
            PRIMARY KEY (worker_id, key));
        CREATE TABLE global_properties (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, event TEXT NOT NULL,
            module TEXT NOT NULL, outcome TEXT NOT NULL, admin TEXT NOT NULL, issuer TEXT,
            serial TEXT, worker_id INTEGER, details TEXT NOT NULL);
        CREATE INDEX audit_log_time ON audit_log (time);
        CREATE TABLE keystores (worker_id INTEGER PRIMARY KEY, data BLOB NOT NULL, updated REAL NOT NULL);
        INSERT INTO meta (key, value) VALUES ('config_generation', '0');
    """,
    2: """
        CREATE TABLE incoming_peers (
            id INTEGER PRIMARY KEY AUTOINCREMENT, subject TEXT NOT NULL, issuer TEXT NOT NULL,
            serial TEXT NOT NULL, remote_address TEXT NOT NULL, first_seen REAL NOT NULL,
            last_seen REAL NOT NULL, count INTEGER NOT NULL,
            UNIQUE (serial, issuer, remote_address));
    """,
    3: """
        CREATE TABLE ra_requests (
            id TEXT PRIMARY KEY, queue TEXT NOT NULL, worker_id INTEGER NOT NULL, worker TEXT NOT NULL,
            request TEXT NOT NULL, state TEXT NOT NULL, created REAL NOT NULL, deadline REAL NOT NULL,
            claimed_at REAL, claimed_by TEXT, claims INTEGER NOT NULL DEFAULT 0,
            answered_at REAL, answered_by TEXT, chain TEXT, error TEXT);
        CREATE INDEX ra_requests_open ON ra_requests (state, queue, created);
        CREATE TABLE ra_pollers (
            identity TEXT PRIMARY KEY, queues TEXT NOT NULL, first_poll REAL NOT NULL, last_poll REAL NOT NULL,
            polls INTEGER NOT NULL);
    """,
    4: """
        CREATE TABLE token_activations (
            worker_id INTEGER NOT NULL, node TEXT NOT NULL, active INTEGER NOT NULL, sealed BLOB,
            updated REAL NOT NULL, PRIMARY KEY (worker_id, node));
        INSERT OR IGNORE INTO meta (key, value) VALUES ('activation_generation', '0');
    """,
}


def make_legacy_database(path: Path, version: int, write_version: bool = True) -> None:
    """A database as signpeer 0.1 left it at ``version``, with a row in every table it had."""
    db = sqlite3.connect(path)
    for number in range(1, version + 1):
        db.executescript(LEGACY_MIGRATIONS[number])
    if write_version:
        db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(version),))
    db.execute("UPDATE meta SET value='7' WHERE key='config_generation'")
    db.execute("INSERT INTO worker_properties VALUES (1, 'NAME', 'Signer1')")
    db.execute("INSERT INTO global_properties VALUES ('GLOB.WSPEERS', 'rule')")
    db.execute("INSERT INTO audit_log (time, event, module, outcome, admin, details) "
               "VALUES (1000.5, 'SET_WORKER_CONFIG', 'WORKER_CONFIG', 'SUCCESS', 'CLI user x', '{}')")
    db.execute("INSERT INTO keystores VALUES (1, x'00010203', 1000.5)")
    if version >= 2:
        db.execute("INSERT INTO incoming_peers (subject, issuer, serial, remote_address, first_seen, last_seen, count)"
                   " VALUES ('CN=Peer', 'CN=CA', '0a', '127.0.0.1', 1.0, 2.0, 3)")
    if version >= 3:
        db.execute("INSERT INTO ra_requests (id, queue, worker_id, worker, request, state, created, deadline) "
                   "VALUES ('r1', 'CA', 2, 'OneTime', '{}', 'pending', 10.0, 20.0)")
    if version >= 4:
        db.execute("INSERT INTO token_activations VALUES (1, 'node1', 1, x'aa', 5.0)")
    db.commit()
    db.close()


def plugin_sources() -> list[MigrationSource]:
    incoming = pytest.importorskip("signpeer_peerconnector.incoming_store")
    raqueue = pytest.importorskip("signpeer_onetimecrypto.raqueue")
    return [incoming.migration_source(), raqueue.migration_source()]


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def version_of(path: Path, owner: str) -> list[str]:
    return [r[0] for r in rows(path, f"SELECT version_num FROM alembic_version_{owner}")]


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_an_old_database_is_adopted_without_losing_data(tmp_path: Path, version: int) -> None:
    path = tmp_path / "signpeer.db"
    make_legacy_database(path, version)
    store = open_store(f"sqlite:///{path}", plugin_sources())
    try:
        assert store.config_generation() == 7
        assert store.worker_properties(1) == {"NAME": "Signer1"}
        assert store.global_properties() == {"GLOB.WSPEERS": "rule"}
        assert [(e.event, e.time) for e in store.audit_events()] == [("SET_WORKER_CONFIG", 1000.5)]
        assert store.keystore(1) == b"\x00\x01\x02\x03"
        assert store.token_activations("node1") == ({1: (True, b"\xaa")} if version >= 4 else {})
        assert store.activation_generation() == 0
        from signpeer_onetimecrypto.raqueue import RaQueue
        from signpeer_peerconnector.incoming_store import IncomingPeers

        peers = IncomingPeers(store.database).all()
        assert [(p.subject, p.count) for p in peers] == ([("CN=Peer", 3)] if version >= 2 else [])
        requests = RaQueue(store.database).requests(now=15.0)
        assert [(r.id, r.state) for r in requests] == ([("r1", "pending")] if version >= 3 else [])
        # New rows work in the adopted tables (AUTOINCREMENT ids go on after the old ones).
        IncomingPeers(store.database).touch([("CN=Other", "CN=CA", "0b", "127.0.0.2", 3.0, 1)])
        assert sorted(p.id for p in IncomingPeers(store.database).all()) == ([1, 2] if version >= 2 else [1])
    finally:
        store.close()
    assert version_of(path, "core") == ["core_0007"]
    assert version_of(path, "peerconnector") == ["peerconnector_0002"]
    assert version_of(path, "onetimecrypto") == ["onetimecrypto_0001"]
    meta = dict(rows(path, "SELECT key, value FROM meta WHERE key LIKE '%schema_version'"))
    assert meta == {"schema_version": "5", "legacy_schema_version": str(version)}


def test_the_first_release_wrote_no_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "signpeer.db"
    make_legacy_database(path, 1, write_version=False)
    open_store(f"sqlite:///{path}").close()
    assert version_of(path, "core") == ["core_0007"]
    assert rows(path, "SELECT value FROM meta WHERE key='legacy_schema_version'") == [("1",)]
    assert rows(path, "SELECT value FROM meta WHERE key='config_generation'") == [("7",)]


def test_a_plugin_installed_after_the_adoption_is_stamped_too(tmp_path: Path) -> None:
    """The core alone adopts the database (``signpeer serve`` forgets activations before plugins
    load); the plugins' tables, already there, are stamped when their owners first open it."""
    path = tmp_path / "signpeer.db"
    make_legacy_database(path, 4)
    open_store(f"sqlite:///{path}").close()
    assert version_of(path, "core") == ["core_0007"]
    store = open_store(f"sqlite:///{path}", plugin_sources())
    store.close()
    assert version_of(path, "peerconnector") == ["peerconnector_0002"]
    assert rows(path, "SELECT subject, count FROM incoming_peers") == [("CN=Peer", 3)]
    assert rows(path, "SELECT id, state FROM ra_requests") == [("r1", "pending")]


def test_a_newer_old_style_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "signpeer.db"
    make_legacy_database(path, 4)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    with pytest.raises(ConfigurationError, match=r"schema version 999, newer than this signpeer understands \(4\); "
                                                 "upgrade signpeer"):
        open_store(f"sqlite:///{path}")
    assert rows(path, "SELECT name FROM sqlite_master WHERE name LIKE 'alembic%'") == []

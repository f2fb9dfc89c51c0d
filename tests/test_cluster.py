"""Several processes and nodes on one database: pushed reload, the node registry, PostgreSQL.

Real parts: ``signpeer serve`` subprocesses, a real PostgreSQL (``postgres`` fixture: initdb and
pg_ctl in a temporary directory) and HAProxy in TCP mode in front of two nodes.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from signpeer_core.settings import load_settings
from signpeer_core.storage import open_store
from signpeer_core.storage.protection import KeySource
from signpeer_core.testing import add_signer, open_services, wait_until, write_home
from signpeer_core.testing.haproxy import HAProxy
from signpeer_core.testing.postgres import PostgresServer, accepting, on_postgresql

PROCESS = "/signserver/rest/v1/workers/{}/process"


def _sign(client: httpx.Client, worker: str, data: bytes = b"hello") -> httpx.Response:
    return client.post(PROCESS.format(worker), json={"data": base64.b64encode(data).decode(), "encoding": "BASE64"})


def _slow_fallback(home: Path) -> None:
    """Fallback checks as rare as they go (the heartbeat): what a test sees quickly was pushed."""
    toml = home / "signpeer.toml"
    toml.write_text(toml.read_text().replace("reload_poll_interval = 0.2", "reload_poll_interval = 60"))


def _node_home(tmp_path: Path, pki: Any, name: str, url: str) -> Path:
    return write_home(tmp_path / name, pki, settings=f'database_url = "{url}"\nnode_id = "{name}"\n'
                      f'key_file = "{tmp_path / "cluster.key"}"\n')  # every node: the key of the database


# -- SQLite: one machine, several processes --------------------------------------------------------

def test_a_published_change_is_pushed_to_listeners(home: Path, services: Any, signpeer: Any) -> None:
    got: list[str | None] = []
    arrived = threading.Event()
    database = services.store.database

    def heard(payload: str | None) -> None:
        got.append(payload)
        arrived.set()

    stop = database.listen("config_generation", heard)
    try:
        before = services.store.config_generation()
        assert signpeer("reload", "all").code == 0  # another process publishes
        assert arrived.wait(10), "no notification reached this process"
        assert got[-1] == str(before + 1)
    finally:
        stop()


def test_reload_returns_when_every_server_process_applied_it(home: Path, services: Any, pki: Any, start_server: Any,
                                                              signpeer: Any, https_client: Any) -> None:
    _slow_fallback(home)
    server = start_server(home, "--workers", "2")
    wait_until(lambda: len(services.store.nodes.live()) == 2, timeout=30, what="two registered processes")
    add_signer(services, pki, "Late", AUTHTYPE="NOAUTH")  # stored; not active in the server yet
    client = https_client(server)
    assert _sign(client, "Late").status_code == 404

    r = signpeer("reload", "all")
    assert r.code == 0, r.err
    assert re.search(r"Applied by 2 server process\(es\) on 1 node\(s\) in \d+ ms", r.out), r.out
    # Both processes have it now: new connections land on either.
    for _ in range(6):
        with https_client(server) as fresh:
            assert _sign(fresh, "Late").status_code == 200
    generation = services.store.config_generation()
    assert all(p.generation == generation for p in services.store.nodes.live())


def test_nodes_lists_live_and_stale_processes(home: Path, services: Any, start_server: Any, signpeer: Any) -> None:
    server = start_server(home)
    wait_until(lambda: services.store.nodes.live(), timeout=30, what="the registered process")
    r = signpeer("nodes", "--json")
    assert r.code == 0, r.err
    listed = json.loads(r.out)["processes"]
    node = load_settings(home).node_id
    assert [(p["node"], p["pid"], p["live"]) for p in listed] == [(node, server.proc.pid, True)]
    assert listed[0]["address"] == server.url

    server.proc.kill()  # kill -9: no clean removal of its row
    server.proc.wait(10)
    r = signpeer("nodes")
    assert r.code == 0 and "STALE" in r.out and str(server.proc.pid) in r.out, r.out
    # A dead process is not waited for.
    r = signpeer("reload", "all", "--timeout", "30")
    assert r.code == 0 and "No server is running" in r.out, r.out + r.err
    r = signpeer("nodes", "--prune")
    assert "Removed 1 stale process(es)" in r.out and services.store.nodes.processes() == []


def test_reload_names_the_processes_that_did_not_apply_in_time(home: Path, services: Any, signpeer: Any) -> None:
    # A process that registered but never applies anything (this one: it does not follow changes).
    services.store.nodes.register("stuck:test", "stuck-node", "https://127.0.0.1:1", 0, 0)
    r = signpeer.in_process("reload", "all", "--timeout", "0.3")
    assert r.code != 0
    assert "1 of 1 server process(es) did not apply generation" in r.err and "node stuck-node" in r.err, r.err


# -- PostgreSQL: several nodes ------------------------------------------------------------------

KEY = secrets.token_hex(32)


def test_postgresql_store_round_trip_and_migrations_once(postgres: PostgresServer) -> None:
    url = postgres.fresh_url()
    stores = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(open_store(url, key=KeySource(url, key=KEY)))  # one key for every node
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]  # four "nodes" starting at once
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    try:
        store = stores[0]
        assert store.database.dialect == "postgresql"
        store.update_worker(1, {"NAME": "W", "X": "1"})
        store.put_keystore(1, b"\x00\x01keystore")
        assert stores[1].worker_properties(1) == {"NAME": "W", "X": "1"}
        assert stores[2].keystore(1) == b"\x00\x01keystore"
        assert stores[3].bump_config_generation() == 1
    finally:
        for s in stores:
            s.close()


def test_a_node_setting_up_the_data_protection_key_holds_off_another(postgres: PostgresServer) -> None:
    """Two nodes opening a fresh database at once: the second must not insert the key check the
    first is inserting (a unique violation, an error at start), but wait and find it."""
    from sqlalchemy import Boolean, column, func, insert, select, table

    from signpeer_core.storage.database import Database
    from signpeer_core.storage.migrations import core_source, migrate
    from signpeer_core.storage.store import KEY_CHECK
    from signpeer_core.storage.tables import meta

    locks = table("pg_locks", column("granted", Boolean))
    url = postgres.fresh_url()
    database = Database(url)
    try:
        migrate(database, [core_source()])
        check = KeySource(url, key=KEY).load(None).check
        opened: list[Any] = []
        errors: list[BaseException] = []

        def open_one() -> None:
            try:
                opened.append(open_store(url, key=KeySource(url, key=KEY)))
            except BaseException as exc:
                errors.append(exc)

        other = threading.Thread(target=open_one)
        with database.transaction() as conn:  # "node a", in the middle of setting the key up
            database.serialize(conn, "data-protection")
            conn.execute(insert(meta), {"key": KEY_CHECK, "value": check})
            other.start()  # "node b" reads no key check yet (a's is not committed)

            def waiting() -> bool:
                with database.read() as watch:
                    return bool(watch.execute(select(func.count()).select_from(locks).where(~locks.c.granted)).scalar())

            wait_until(waiting, timeout=30, what="node b waiting for node a's transaction")
        other.join(30)
        assert not errors, errors
        assert len(opened) == 1
        opened[0].close()
    finally:
        database.close()


def test_reload_on_node_a_is_served_by_node_b_when_it_returns(tmp_path: Path, pki: Any, postgres: PostgresServer,
                                                                start_server: Any, https_client: Any) -> None:
    from signpeer_core.testing.fixtures import CliRunner

    url = postgres.fresh_url()
    a, b = _node_home(tmp_path, pki, "a", url), _node_home(tmp_path, pki, "b", url)
    for h in (a, b):
        _slow_fallback(h)
    node_a = start_server(a)
    node_b = start_server(b, "--workers", "2")
    services = open_services(a)
    try:
        wait_until(lambda: len(services.store.nodes.live()) == 3, timeout=30, what="three registered processes")
        add_signer(services, pki, "Shared", AUTHTYPE="NOAUTH")
    finally:
        services.close()
    assert _sign(https_client(node_b), "Shared").status_code == 404

    r = CliRunner(a)("reload", "all")
    assert r.code == 0, r.err
    assert "Applied by 3 server process(es) on 2 node(s)" in r.out, r.out
    for _ in range(4):
        with https_client(node_b) as client:
            response = _sign(client, "Shared")
            assert response.status_code == 200, response.text
    assert _sign(https_client(node_a), "Shared").status_code == 200

    nodes = json.loads(CliRunner(b)("nodes", "--json").out)["processes"]
    assert sorted(p["node"] for p in nodes) == ["a", "b", "b"] and all(p["live"] for p in nodes)
    assert {p["address"] for p in nodes} == {node_a.url, node_b.url}

    # The audit log is the cluster's: node B's CLI reads what node A's reload wrote.
    r = CliRunner(b)("auditlog", "--event", "RELOAD_WORKER_CONFIG")
    assert r.code == 0 and "RELOAD_WORKER_CONFIG" in r.out, r.out + r.err
    assert all("; NODEID: a" in line for line in r.out.splitlines()), r.out  # each record names its node

    # Through HAProxy in TCP mode (client certificates reach the nodes): every connection is served.
    proxy = HAProxy([("127.0.0.1", node_a.port), ("127.0.0.1", node_b.port)]).start()
    try:
        for _ in range(6):
            with https_client(proxy.url, cert="admin") as client:
                assert _sign(client, "Shared").status_code == 200
                assert client.get("/signserver/rest/v1/workers").status_code == 200  # the admin cert got through
    finally:
        proxy.stop()


def test_postgresql_restart_while_signing(tmp_path: Path, pki: Any, start_server: Any, https_client: Any) -> None:
    # A server of its own: this test stops and starts it.
    pg = PostgresServer().start()
    try:
        home = _node_home(tmp_path, pki, "solo", pg.fresh_url())
        services = open_services(home)
        try:
            add_signer(services, pki, "S", AUTHTYPE="NOAUTH")
        finally:
            services.close()
        server = start_server(home)
        client = https_client(server)
        failures: list[str] = []
        signed = [0]
        stop = threading.Event()

        def keep_signing() -> None:
            while not stop.is_set():
                response = _sign(client, "S")
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                signed[0] += 1

        signer = threading.Thread(target=keep_signing)
        signer.start()
        try:
            wait_until(lambda: signed[0] >= 20, timeout=30, what="signatures before the restart")
            pg.stop("fast")
            at_stop = signed[0]
            # Configuration commands fail clearly while the database is away.
            from signpeer_core.testing.fixtures import CliRunner

            r = CliRunner(home)("setproperty", "S", "X", "1")
            assert r.code != 0 and "cannot be reached" in r.err and "Traceback" not in r.err, r.err
            wait_until(lambda: signed[0] >= at_stop + 20, timeout=30, what="signatures while PostgreSQL is down")
            pg.start()
            wait_until(lambda: accepting(pg.url()), timeout=30, what="PostgreSQL back")
            r = CliRunner(home)("setproperty", "S", "X", "2")
            assert r.code == 0, r.err
            r = CliRunner(home)("reload", "all")
            assert r.code == 0 and "Applied by 1 server process(es)" in r.out, r.out + r.err
        finally:
            stop.set()
            signer.join(30)
        assert failures == []
        assert "cannot be reached" in server.log() and "Traceback" not in server.log()
    finally:
        pg.close()


@pytest.mark.skipif(on_postgresql(), reason="starts from an SQLite data directory: runs in the SQLite suite")
def test_db_migrate_sqlite_home_into_postgresql(home: Path, services: Any, pki: Any, postgres: PostgresServer,
                                                signpeer: Any, tmp_path: Path, start_server: Any,
                                                https_client: Any) -> None:
    add_signer(services, pki, "Moved", AUTHTYPE="NOAUTH")
    services.store.put_keystore(99, b"\x00binary keystore\xff")
    audit_before = len(services.store.audit_events(limit=100000))
    assert signpeer("setproperty", "global", "MOVED_SETTING", "yes").code == 0
    url = postgres.fresh_url()

    r = signpeer("db", "migrate", "--to", url)
    assert r.code == 0, r.err
    assert "audit_log: " in r.out and "keystores: 2 row(s)" in r.out and "verified" in r.out, r.out
    assert f"data protection key ({home / 'signpeer.key'})" in r.out, r.out

    # The secrets moved sealed: the database goes with this home's key, on every node.
    shutil.copy(home / "signpeer.key", tmp_path / "cluster.key")
    target = open_store(url, key=KeySource(url, key_file=str(tmp_path / "cluster.key")))
    try:
        assert target.keystore(99) == b"\x00binary keystore\xff"
        assert target.worker_properties(1) == services.store.worker_properties(1)
        assert target.global_properties()["GLOB.MOVED_SETTING"] == "yes"
        assert len(target.audit_events(limit=100000)) == audit_before + 1
        target.audit(services.store.audit_events(limit=1)[0])  # the id sequence continues after the copy
    finally:
        target.close()

    # A second copy into the now populated database is refused: nothing is mixed.
    r = signpeer("db", "migrate", "--to", url)
    assert r.code != 0 and "is not empty" in r.err, r.err

    # Both nodes serve the migrated configuration.
    servers = [start_server(_node_home(tmp_path, pki, name, url)) for name in ("m1", "m2")]
    for server in servers:
        assert _sign(https_client(server), "Moved").status_code == 200


def test_init_refuses_a_database_another_node_configured(tmp_path: Path, pki: Any, postgres: PostgresServer) -> None:
    from signpeer_core.testing.fixtures import CliRunner

    url = postgres.fresh_url()
    first = CliRunner(tmp_path / "first")("init", "--database-url", url, "--node", "first")
    assert first.code == 0, first.err
    assert "postgresql://signpeer@" in first.out
    assert 'node_id = "first"' in (tmp_path / "first" / "signpeer.toml").read_text()
    second = CliRunner(tmp_path / "second")("init", "--database-url", url)
    assert second.code != 0 and "already holds a signpeer configuration" in second.err, second.err


@pytest.mark.parametrize("url, words", [
    ("postgresql://signpeer@127.0.0.1:1/x", "cannot be reached"),
    ("mysql://x@y/z", "unsupported database URL"),
])
def test_serve_with_a_wrong_database_url_is_a_clear_error(home: Path, signpeer: Any, url: str, words: str) -> None:
    r = signpeer("serve", "--database-url", url, timeout=60)
    assert r.code != 0 and words in r.err and "Traceback" not in r.err, r.err


def test_the_walk_through_of_docs_cluster_md(tmp_path: Path, postgres: PostgresServer, start_server: Any) -> None:
    """docs/cluster.md's two nodes on one machine, step by step (ports chosen freely)."""
    import shutil

    from signpeer_core.testing.fixtures import CliRunner

    text = (Path(__file__).resolve().parents[1] / "docs" / "cluster.md").read_text()
    for step in ("init --database-url \"$DB\" --node a", "cp -a ~/node-a ~/node-b",
                 "s/^node_id = \"a\"/node_id = \"b\"/", "serve --port 8444 --workers 2", "reload all",
                 "Applied by 3 server process(es) on 2 node(s)"):
        assert step in text, step
    db = postgres.fresh_url()
    node_a, node_b = tmp_path / "node-a", tmp_path / "node-b"
    assert CliRunner(node_a)("init", "--database-url", db, "--node", "a").code == 0
    shutil.copytree(node_a, node_b, symlinks=True)
    toml = node_b / "signpeer.toml"
    toml.write_text(re.sub(r'^node_id = "a"', 'node_id = "b"', toml.read_text(), flags=re.M))
    start_server(node_a)
    start_server(node_b, "--workers", "2")
    services = open_services(node_a)
    try:
        wait_until(lambda: len(services.store.nodes.live()) == 3, timeout=60, what="three processes registered")
    finally:
        services.close()
    r = CliRunner(node_a)("nodes")
    assert r.code == 0 and r.out.count(" live ") == 3 and "node a " in r.out and "node b " in r.out, r.out
    assert CliRunner(node_a)("setproperty", "global", "WALKTHROUGH", "1").code == 0
    r = CliRunner(node_a)("reload", "all")
    assert r.code == 0 and "Applied by 3 server process(es) on 2 node(s)" in r.out, r.out + r.err
    # "The audit log of a cluster": node a lists what node b wrote, each record with its node.
    assert "auditlog --node b --event SET_GLOBAL_PROPERTY" in text
    assert CliRunner(node_b)("setproperty", "global", "WALKTHROUGH_B", "1").code == 0
    r = CliRunner(node_a)("auditlog", "--node", "b", "--event", "SET_GLOBAL_PROPERTY")
    lines = r.out.splitlines()
    assert r.code == 0 and len(lines) == 1 and "GLOB.WALKTHROUGH_B" in lines[0], r.out + r.err
    assert "; NODEID: b;" in lines[0], r.out


def test_activatecryptotoken_reports_each_process(home: Path, services: Any, pki: Any, start_server: Any,
                                                   signpeer: Any) -> None:
    from signpeer_core.testing import PASSWORD

    wid = add_signer(services, pki, "Manual", AUTHTYPE="NOAUTH")
    services.store.update_worker(wid, remove=["KEYSTOREPASSWORD"])  # starts inactive: activated by hand
    start_server(home, "--workers", "2")
    wait_until(lambda: len(services.store.nodes.live()) == 2, timeout=30, what="two registered processes")
    assert all(wid not in p.active_token_ids for p in services.store.nodes.live())
    r = signpeer("activatecryptotoken", "Manual", PASSWORD)
    assert r.code == 0, r.err
    assert r.out.count("  active     node ") == 2 and "NOT active" not in r.out, r.out
    assert all(wid in p.active_token_ids for p in services.store.nodes.live())

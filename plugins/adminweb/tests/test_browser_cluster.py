"""The Admin Web of a cluster, in a real browser: two ``signpeer serve`` nodes on one real PostgreSQL
behind HAProxy (TCP mode), node b's Admin Web driven in headless Chromium (the ``browser`` fixture of
conftest.py; see ``test_browser.py``).

Issue 10: "a peer refused on node A and authorized from node B's Admin Web is accepted on both",
and the Admin Web shows the node of each incoming-peer entry and of each audit entry.

One test, ~10 s of its own; its set-up (a PostgreSQL server, two nodes, HAProxy, Chromium) takes
most of its time, longer on a loaded machine: each of those is what the test is about.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from signpeer_core.testing import ServerProcess, wait_until, write_home
from signpeer_core.testing.fixtures import CliRunner
from signpeer_core.testing.haproxy import HAProxy, haproxy_binary
from signpeer_core.testing.postgres import PostgresServer, free_port, pg_bin

ADMINWEB = "/signserver/adminweb"
PEER_DN = "CN=Cluster Peer, O=signpeer tests"

if pg_bin() is None or haproxy_binary() is None:
    pytest.skip("needs PostgreSQL and haproxy (scripts/system-deps.sh installs them)", allow_module_level=True)


@pytest.fixture
def cluster(tmp_path: Path, pki: Any, postgres: PostgresServer,
            start_server: Any) -> Iterator[tuple[dict[str, Path], dict[str, ServerProcess], HAProxy]]:
    """Nodes "a" and "b" on one fresh PostgreSQL database (one data protection key), and HAProxy in
    front; each node knows the load balancer's address as its own (``server_name``, for the Admin
    Web's origin check)."""
    url = postgres.fresh_url()
    ports = {name: free_port() for name in ("a", "b")}
    proxy = HAProxy([("127.0.0.1", port) for port in ports.values()])
    homes = {name: write_home(tmp_path / name, pki, settings=f'database_url = "{url}"\nnode_id = "{name}"\n'
                              f'key_file = "{tmp_path / "cluster.key"}"\n'
                              f'server_name = "127.0.0.1, 127.0.0.1:{proxy.port}"\n')
             for name in ("a", "b")}
    # The administrator also reads the Audit Log (Auditor role); set before the nodes start.
    assert CliRunner(homes["b"]).in_process("wsauditors", "-add", "-cert", str(pki.admin.pem)).code == 0
    nodes = {name: start_server(home, "--port", str(ports[name])) for name, home in homes.items()}
    proxy.start()
    try:
        yield homes, nodes, proxy
    finally:
        proxy.stop()


def test_a_peer_refused_on_node_a_and_authorized_from_node_b_admin_web_is_accepted_on_both(
    browser: Any, cluster: tuple[dict[str, Path], dict[str, ServerProcess], HAProxy], pki: Any,
) -> None:
    homes, nodes, proxy = cluster
    cli = CliRunner(homes["b"])
    peer = pki.issue_client("Cluster Peer")

    def ping(url: str) -> Any:
        return cli.in_process("connector", "ping", url, "--cert", str(peer.pem), "--key", str(peer.key_pem),
                              "--cacert", str(homes["b"] / "tls" / "ca.pem"))

    context = browser.new_context(viewport={"width": 1280, "height": 800}, client_certificates=[
        {"origin": nodes[n].url, "certPath": str(pki.admin.pem), "keyPath": str(pki.admin.key_pem)} for n in "ab"])
    context.set_default_timeout(15000)
    try:
        page = context.new_page()
        page.goto(nodes["b"].url + ADMINWEB + "/administrators")
        assert page.locator("footer").inner_text() == "signpeer on node b"
        peers = page.locator("#peer-systems")
        peers.get_by_label("Allow incoming connections").check()
        peers.get_by_role("button", name="Save").click()
        assert page.locator("p.message.ok").inner_text() == "Incoming peer connections are now allowed."

        # Refused on node a; node b's Admin Web lists the call with the node that saw it.
        code, _, err = ping(nodes["a"].url)
        assert code != 0 and "Unauthorized" in err, err
        page.reload()
        row = page.locator("#incoming-connections tbody tr", has_text=PEER_DN)
        assert row.count() == 1
        header = page.locator("#incoming-connections thead th").all_inner_texts()
        cells = dict(zip(header, row.locator("td").all_inner_texts(), strict=True))
        assert (cells["Node"], cells["Authorized"]) == ("a", "No"), cells

        # Authorized from node b's Admin Web: Add Authorization... (prefilled, Peer System) and Add.
        row.get_by_role("link", name="Add Authorization...").click()
        form = page.locator("#add-form")
        assert form.get_by_label("Peer System").is_checked()
        form.get_by_role("button", name="Add", exact=True).click()
        assert page.locator("p.message.ok").inner_text().startswith(
            f"Added authorization for serial number {format(peer.cert.serial_number, 'x')}")

        # Accepted on both nodes directly (node a applies the change it was told of), and through HAProxy.
        wait_until(lambda: ping(nodes["a"].url)[0] == 0, timeout=20, what="node a to accept the peer")
        for url in (nodes["b"].url, *[proxy.url] * 4):
            code, out, err = ping(url)
            assert code == 0 and "Ping OK" in out, err

        # Node a's Admin Web: node b's changes in the Audit Log, each with the node that wrote it.
        page.goto(nodes["a"].url + ADMINWEB + "/auditlog?event=SET_GLOBAL_PROPERTY")
        assert page.locator("footer").inner_text() == "signpeer on node a"
        rows = audit_rows(page)
        by_admin = [(r["Node"], r["Details"]) for r in rows if r["Administrator"].startswith("CN=admin")]
        assert {n for n, d in by_admin if "GLOB.WSPEERS" in d} == {"b"}, rows  # the rule (and its issuer key)
        assert [n for n, d in by_admin if "GLOB.PEERS_INCOMING_ENABLED" in d] == ["b"], rows
        assert {r["Node"] for r in rows if "GLOB.WSAUDITORS" in r["Details"]} == {"b"}  # the CLI of node b's home
        page.locator("#audit-filters").get_by_label("Node").fill("a")
        page.locator("#audit-filters").get_by_role("button", name="Filter").click()
        rows = audit_rows(page)
        assert rows and {r["Node"] for r in rows} == {"a"}, rows  # node a's own set-up only
        assert not any("GLOB.WSPEERS" in r["Details"] for r in rows)
    finally:
        context.close()
    # On the same cluster (its set-up is most of this test's time):
    a_form_from_one_node_is_accepted_by_the_other(homes, nodes, proxy, pki)


def audit_rows(page: Any) -> list[dict[str, str]]:
    """The Audit Log table's rows, each as {column heading: cell text}."""
    header = page.locator("#audit-events thead th").all_inner_texts()
    rows = page.locator("#audit-events tbody tr")
    return [dict(zip(header, rows.nth(i).locator("td").all_inner_texts(), strict=True)) for i in range(rows.count())]


def a_form_from_one_node_is_accepted_by_the_other(homes: dict[str, Path], nodes: dict[str, ServerProcess],
                                                  proxy: HAProxy, pki: Any) -> None:
    """Behind a load balancer a page and its form's POST may reach different nodes: the CSRF token
    is keyed by the data protection key every node shares, not by a file of one node."""
    import re

    import httpx

    from signpeer_core.testing import client_context, open_services

    context = client_context(pki.ca_pem, pki.admin.pair)
    with httpx.Client(base_url=nodes["a"].url, verify=context) as first:
        page = first.get(ADMINWEB + "/globalconfig").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        cookies = dict(first.cookies.items())
    for name in ("b", "a"):  # the Origin is the load balancer's, as a browser behind it sends
        with httpx.Client(base_url=nodes[name].url, verify=context, cookies=cookies) as client:
            r = client.post(ADMINWEB + "/globalconfig", headers={"Origin": proxy.url}, data={
                "csrf_token": token, "action": "set_property", "scope": "GLOB", "key": f"FROM_{name}", "value": "x"})
            assert r.status_code == 303, r.text
    services = open_services(homes["a"])
    try:
        assert {"GLOB.FROM_A", "GLOB.FROM_B"} <= set(services.store.global_properties())
    finally:
        services.close()

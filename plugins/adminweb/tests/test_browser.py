"""The Admin Web in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright,
over mutual TLS with the administrator's client certificate.

Playwright presents client certificates through its own TLS proxy (``client_certificates`` of
``new_context``); that proxy runs in Playwright's Node.js driver, which is told to trust the
development CA with ``NODE_EXTRA_CA_CERTS`` so the server certificate is still verified.

Set ``SIGNPEER_SCREENSHOTS=<dir>`` to keep screenshots of the main pages (the README's images
in ``docs/images/`` are made that way).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from signpeer_core import devpki
from signpeer_core.settings import load_settings
from signpeer_core.testing import Credential, ServerProcess, open_services

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install 'signpeer-adminweb[test]'")

CHROMIUM = os.environ.get("SIGNPEER_CHROMIUM", "/usr/bin/chromium")
ADMINWEB = "/signserver/adminweb"
PEER_DN = "CN=EJBCA Peer Connector, OU=Peers, O=signpeer tests"

if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (make system-deps does)",
                allow_module_level=True)


@pytest.fixture
def open_page(browser: Any, server: ServerProcess) -> Iterator[Callable[[Credential], Any]]:
    """``open_page(credential)`` → a Playwright page whose TLS connections present that certificate."""
    contexts: list[Any] = []

    def make(cred: Credential) -> Any:
        context = browser.new_context(
            accept_downloads=True, viewport={"width": 1280, "height": 800},
            client_certificates=[{"origin": server.url, "certPath": str(cred.pem), "keyPath": str(cred.key_pem)}])
        context.set_default_timeout(15000)
        contexts.append(context)
        return context.new_page()

    yield make
    for c in contexts:
        c.close()


def shot(page: Any, name: str) -> None:
    folder = os.environ.get("SIGNPEER_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def flash(page: Any) -> str:
    return str(page.locator("p.message.ok").inner_text())


def ping(signpeer: Any, server: ServerProcess, peer: Credential, home: Path) -> tuple[int, str, str]:
    return signpeer("connector", "ping", server.url, "--cert", str(peer.pem), "--key", str(peer.key_pem),
                    "--cacert", str(home / "tls" / "ca.pem"))


def test_seed_flow_allow_incoming_ping_add_authorization_ping(
    open_page: Any, server: ServerProcess, pki: Any, signpeer: Any, home: Path,
) -> None:
    admin = open_page(pki.admin)
    admin.goto(server.url + ADMINWEB + "/administrators")
    peers = admin.locator("#peer-systems")
    assert "Incoming Connections" not in peers.inner_text()  # off and nobody called yet
    peers.get_by_label("Allow incoming connections").check()
    peers.get_by_role("button", name="Save").click()
    assert flash(admin) == "Incoming peer connections are now allowed."
    assert "No peer has successfully connected to this node." in admin.locator("#peer-systems").inner_text()

    peer = pki.issue_client("EJBCA Peer Connector", dn_suffix=", OU=Peers, O=signpeer tests")
    code, _, err = ping(signpeer, server, peer, home)
    assert code != 0 and "Unauthorized" in err, err

    admin.reload()
    row = admin.locator("#incoming-connections tbody tr", has_text=PEER_DN)
    assert row.count() == 1
    cells = row.locator("td")
    assert cells.nth(1).inner_text() == "127.0.0.1"
    assert cells.nth(2).inner_text() == load_settings(home).node_id  # the node that saw it
    assert cells.nth(4).inner_text() == "No"
    assert cells.nth(0).get_attribute("title").startswith("Current source ID: ")
    assert row.get_by_role("link", name="Modify Authorization...").count() == 0
    shot(admin, "administrators-incoming")
    row.get_by_role("link", name="Add Authorization...").click()

    form = admin.locator("#add-form")
    assert form.get_by_label("Certificate Serial Number:").input_value() == format(peer.cert.serial_number, "x")
    assert form.get_by_label("Issuer DN:").input_value() == "CN=signpeer test CA, O=signpeer tests"
    assert form.get_by_label("Peer System").is_checked()
    for role in ("Admin", "Auditor", "Archive Auditor"):
        assert not form.get_by_label(role, exact=True).is_checked(), role
    assert form.get_by_role("button", name="Load Current").count() == 0  # hidden when Peer System is preselected
    shot(admin, "administrators-add-authorization")
    form.get_by_role("button", name="Add", exact=True).click()

    assert flash(admin).startswith(f"Added authorization for serial number {format(peer.cert.serial_number, 'x')}")
    auth_row = admin.locator("#authorizations-table tbody tr", has_text=format(peer.cert.serial_number, "x"))
    assert auth_row.locator("td").nth(2).inner_text() == "Peer System"
    row = admin.locator("#incoming-connections tbody tr", has_text=PEER_DN)
    assert row.locator("td").nth(4).inner_text() == "Yes"
    assert row.get_by_role("link", name="Modify Authorization...").count() == 1

    # The Admin Web bumped the configuration generation: the server applies the rule within its poll interval.
    code, out, err = ping(signpeer, server, peer, home)
    assert code == 0, err
    assert "Ping OK" in out and PEER_DN in out
    admin.reload()
    shot(admin, "administrators")

    # Clear forgets the row (it comes back with the next call).
    admin.locator("#incoming-connections tbody tr", has_text=PEER_DN).get_by_role("button", name="Clear").click()
    assert flash(admin) == "Incoming connection cleared."
    assert "No peer has successfully connected to this node." in admin.locator("#peer-systems").inner_text()

    services = open_services(home)
    try:
        events = services.store.audit_events(event="SET_GLOBAL_PROPERTY", admin="CN=admin, O=signpeer tests")
    finally:
        services.close()
    changed = {e.details["GLOBALCONFIG_PROPERTY"]: e.details["GLOBALCONFIG_VALUE"] for e in reversed(events)}
    assert changed["GLOB.PEERS_INCOMING_ENABLED"] == "true"
    assert changed["GLOB.WSPEERS"] == f"{format(peer.cert.serial_number, 'x')},CN=signpeer test CA, O=signpeer tests;"


def test_auditor_sees_pages_but_cannot_change_anything(
    open_page: Any, server: ServerProcess, pki: Any, signpeer: Any, home: Path,
) -> None:
    auditor_cred = pki.issue_client("auditor")
    assert signpeer("wsauditors", "-add", "-cert", str(auditor_cred.pem))[0] == 0
    auditor = open_page(auditor_cred)
    auditor.goto(server.url + ADMINWEB + "/workers/1")
    assert "Auditor (read-only)" in auditor.locator("header .who").inner_text()
    assert auditor.locator("#properties").get_by_text("DEFAULTKEY", exact=True).count() == 1
    generate = auditor.locator("#generate-key")
    generate.get_by_label("Alias").fill("auditor-key")
    generate.get_by_role("button", name="Generate key").click()
    assert auditor.locator("h1").inner_text() == "Not authorized"
    assert "needs the Admin role. Nothing was changed." in auditor.locator(".message.error").inner_text()

    auditor.goto(server.url + ADMINWEB + "/administrators")
    auditor.get_by_role("button", name="Switch to 'Allow any'").click()
    assert auditor.locator("h1").inner_text() == "Not authorized"
    auditor.goto(server.url + ADMINWEB + "/auditlog")
    assert auditor.locator("#audit-events tbody tr").count() >= 1

    services = open_services(home)
    try:
        assert "ALLOWANYWSADMIN" not in " ".join(services.store.global_properties())
        services.runtime.load()
        assert "auditor-key" not in services.runtime.get("Signer1").token.key_aliases()
    finally:
        services.close()


def test_worker_keys_renewal_csr_download_and_certificate_installation(
    open_page: Any, server: ServerProcess, pki: Any, signpeer: Any, home: Path, tmp_path: Path,
) -> None:
    signpeer("wsauditors", "-add", "-cert", str(pki.admin.pem))  # to look at the Audit Log as well
    admin = open_page(pki.admin)
    admin.goto(server.url + ADMINWEB + "/workers")
    assert admin.locator("#workers tbody tr", has_text="Signer1").locator(".status").inner_text() == "ACTIVE"
    shot(admin, "workers")
    admin.get_by_role("link", name="Signer1").click()
    assert admin.locator("h1").inner_text().startswith("Worker Signer1")

    # Generate and test a key, then remove it.
    generate = admin.locator("#generate-key")
    generate.get_by_label("Alias").fill("extra00001")
    generate.get_by_label("Key algorithm").fill("ECDSA")
    generate.get_by_label("Key specification").fill("secp256r1")
    generate.get_by_role("button", name="Generate key").click()
    assert flash(admin) == "Generated key 'extra00001'."
    key_row = admin.locator("#keys tbody tr", has_text="extra00001")
    assert "EC" in key_row.inner_text()
    key_row.get_by_role("button", name="Test").click()
    assert "extra00001" in flash(admin) and "SUCCESS" in flash(admin)

    # Bad input: a key specification the algorithm does not have; the page says so, nothing is generated.
    generate = admin.locator("#generate-key")
    generate.get_by_label("Alias").fill("broken00001")
    generate.get_by_label("Key algorithm").fill("ECDSA")
    generate.get_by_label("Key specification").fill("nocurve")
    generate.get_by_role("button", name="Generate key").click()
    assert "nocurve" in admin.locator("p.message.error").first.inner_text()
    assert admin.locator("#keys tbody tr", has_text="broken00001").count() == 0

    # Renew key: the next key is generated, tested and set as NEXTCERTSIGNKEY.
    admin.locator("#renew").get_by_role("button", name="Renew key").click()
    message = flash(admin)
    assert message.startswith("Generated the next key '"), message
    next_alias = message.split("'")[1]
    assert admin.locator("#keys tbody tr", has_text=next_alias).locator(".badge").inner_text() == "NEXTCERTSIGNKEY"
    shot(admin, "worker")

    # Generate CSR (the next key is preselected) and download it.
    with admin.expect_download() as info:
        admin.locator("#generate-csr").get_by_role("button", name="Generate CSR").click()
    download = info.value
    assert download.suggested_filename == f"Signer1-{next_alias}.csr"
    csr_path = tmp_path / "next.csr"
    download.save_as(str(csr_path))
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == f"CN={next_alias}"

    # A certificate for another key is refused with a message, and nothing changes.
    install = admin.locator("#install-certificates")
    install.get_by_label("Certificate chain (PEM)").fill(pki.client.pem.read_text())
    install.get_by_role("button", name="Install").click()
    assert "does not match the current or next key" in admin.locator("p.message.error").first.inner_text()

    # The CA issues for the CSR; install the chain from a file.
    cert = pki.issue_signer(csr.public_key(), "CN=Signer1 renewed, O=signpeer tests")
    chain = tmp_path / "chain.pem"
    chain.write_bytes(devpki.cert_pem(cert, pki.ca_cert))
    install = admin.locator("#install-certificates")
    install.locator("input[type=file]").set_input_files(str(chain))
    install.get_by_role("button", name="Install").click()
    assert flash(admin) == (f"Installed 2 certificate(s) for key '{next_alias}'; key '{next_alias}' is now "
                            "DEFAULTKEY. The worker was reloaded.")
    assert admin.locator("#keys tbody tr", has_text=next_alias).locator(".badge").inner_text() == "DEFAULTKEY"
    assert admin.locator("#status .status").inner_text() == "ACTIVE"

    # Remove the extra key.
    admin.locator("#keys tbody tr", has_text="extra00001").get_by_role("button", name="Remove").click()
    assert flash(admin) == "Removed key 'extra00001'."

    # Edit a property and see it pending until Reload.
    assert admin.locator("#properties tbody tr", has_text="REQUESTDN").count() == 0
    add = admin.locator("#add-property")
    add.get_by_label("Property").fill("requestdn")
    add.get_by_label("Value").fill("CN=Signer1, O=signpeer tests")
    add.get_by_role("button", name="Add").click()
    assert flash(admin) == "Property REQUESTDN saved. Click Reload to make it active."
    assert "Reload to make it active" in admin.locator("#status").inner_text()
    admin.locator("#status").get_by_role("button", name="Reload").click()
    assert flash(admin) == "Worker configuration reloaded."

    services = open_services(home)
    try:
        config = services.store.worker_properties(1)
        events = services.store.audit_events(worker_id=1, admin="CN=admin, O=signpeer tests")
    finally:
        services.close()
    assert config["DEFAULTKEY"] == next_alias and "NEXTCERTSIGNKEY" not in config
    names = {e.event for e in events}
    assert {"KEYGEN", "KEYTEST", "KEYREMOVE", "GENCSR", "CERTINSTALLED", "CERTCHAININSTALLED", "KEYSELECTED",
            "SET_WORKER_CONFIG", "RELOAD_WORKER_CONFIG"} <= names
    assert all(e.admin.serial == format(pki.admin.cert.serial_number, "x") for e in events)

    # The Audit Log shows them, filtered.
    admin.goto(server.url + ADMINWEB + "/auditlog")
    filters = admin.locator("#audit-filters")
    filters.get_by_label("Event").fill("KEYGEN")
    filters.get_by_role("button", name="Filter").click()
    rows = admin.locator("#audit-events tbody tr")
    assert rows.count() == 2  # extra00001 and the next key
    assert all(rows.nth(i).locator("td").nth(1).inner_text() == "KEYGEN" for i in range(rows.count()))
    filters = admin.locator("#audit-filters")
    filters.get_by_label("Event").fill("")
    filters.get_by_role("button", name="Filter").click()
    shot(admin, "auditlog")
    admin.goto(server.url + ADMINWEB + "/globalconfig")
    shot(admin, "globalconfig")


def test_authorizations_add_by_upload_load_current_edit_and_remove(
    open_page: Any, server: ServerProcess, pki: Any, home: Path,
) -> None:
    alice = pki.issue_client("alice")
    admin = open_page(pki.admin)
    admin.goto(server.url + ADMINWEB + "/administrators")
    admin.get_by_role("link", name="Add...").click()
    form = admin.locator("#add-form")
    assert form.get_by_label("Admin", exact=True).is_checked()  # the default role
    # "Load Current" fills in the logged-in administrator's own certificate.
    form.get_by_role("button", name="Load Current").click()
    form = admin.locator("#add-form")
    assert form.get_by_label("Certificate Serial Number:").input_value() == format(pki.admin.cert.serial_number, "x")
    # "…" opens the paste/upload area; Load fills serial number and issuer from the file.
    form.locator("summary").click()
    form.locator("input[type=file]").set_input_files(str(alice.pem))
    form.get_by_role("button", name="Load", exact=True).click()
    form = admin.locator("#add-form")
    assert "Loaded certificate 'CN=alice, O=signpeer tests'." in admin.locator("p.message.ok").inner_text()
    serial = format(alice.cert.serial_number, "x")
    assert form.get_by_label("Certificate Serial Number:").input_value() == serial
    assert form.get_by_label("Issuer DN:").input_value() == "CN=signpeer test CA, O=signpeer tests"
    form.get_by_role("button", name="Add", exact=True).click()
    row = admin.locator("#authorizations-table tbody tr", has_text=serial)
    assert row.locator("td").nth(2).inner_text() == "Admin"

    # Edit: add the Auditor role (Submit rewrites all four rule properties).
    row.get_by_role("link", name="Edit").click()
    edit = admin.locator("#edit-form")
    edit.get_by_label("Auditor", exact=True).check()
    edit.get_by_role("button", name="Submit").click()
    row = admin.locator("#authorizations-table tbody tr", has_text=serial)
    assert row.locator("td").nth(2).inner_text() == "Admin, Auditor"

    # Alice can now log in, and sees the Audit Log.
    alice_page = open_page(alice)
    alice_page.goto(server.url + ADMINWEB + "/auditlog")
    assert alice_page.locator("h1").inner_text() == "Audit Log"

    # Remove asks first, then removes the certificate from every role.
    row.get_by_role("link", name="Remove").click()
    confirm = admin.locator("#remove-form")
    assert "Are you sure you want to remove the administrator" in confirm.inner_text()
    assert confirm.get_by_label("Admin", exact=True).is_disabled()
    confirm.get_by_role("button", name="Remove").click()
    assert admin.locator("#authorizations-table tbody tr", has_text=serial).count() == 0
    alice_page.reload()
    assert alice_page.locator("h1").inner_text() == "Authorization denied"


def test_the_admin_p12_from_signpeer_init_logs_in(browser: Any, tmp_path: Path) -> None:
    """What a user does: ``signpeer init``, ``signpeer serve``, the browser presents ``admin.p12``."""
    from signpeer_core.testing import run_signpeer

    home = tmp_path / "fresh"
    init = run_signpeer(home, "init")
    assert init.returncode == 0, init.stderr.decode()
    assert b"/signserver/adminweb/" in init.stdout
    server = ServerProcess(home, (), None).start()
    try:
        password = (home / "tls" / "admin.p12.password").read_text().strip()
        # This home has its own development CA: let Playwright's TLS proxy trust it for this context.
        context = browser.new_context(client_certificates=[{
            "origin": server.url, "pfxPath": str(home / "tls" / "admin.p12"), "passphrase": password}],
            ignore_https_errors=True)
        try:
            page = context.new_page()
            page.goto(server.url + ADMINWEB + "/workers")
            assert page.locator("h1").inner_text() == "Workers"
            assert "CMSSigner" in page.locator("#workers").inner_text()
            assert "Admin" in page.locator("header .who").inner_text()
        finally:
            context.close()
    finally:
        server.stop()


def test_overview_shows_workers_expiry_ra_queue_and_signing_rate(
    open_page: Any, server: ServerProcess, pki: Any, home: Path,
) -> None:
    """The overview page, drawn from the same figures as /metrics: after signing, a soon-expiring
    signer added and a broken one, the counts, the expiry timeline and the rate match."""
    import httpx

    from signpeer_core.certificates import encode_certificate_property
    from signpeer_core.testing import add_signer, client_context

    services = open_services(home)
    try:
        soon = add_signer(services, pki, "ExpiresSoon", AUTHTYPE="NOAUTH")
        token = services.runtime.get("ExpiresSoon").token
        cert = devpki.issue(pki.ca_key, pki.ca_cert, "CN=ExpiresSoon", token.public_key("signer00001"), days=10)
        services.store.update_worker(soon, {"SIGNERCERTCHAIN": encode_certificate_property([cert, pki.ca_cert])})
        broken = add_signer(services, pki, "NoKey", AUTHTYPE="NOAUTH")
        services.store.update_worker(broken, {"DEFAULTKEY": "missing"})
        add_signer(services, pki, "Paused", DISABLED="true")
        services.store.update_worker(1, {"AUTHTYPE": "NOAUTH"})
        services.store.bump_config_generation()
        signer1 = services.runtime.get("Signer1").chain[0]
    finally:
        services.close()
    with httpx.Client(base_url=server.url, verify=client_context(pki.ca_pem), timeout=30,
                      headers={"X-Keyfactor-Requested-With": "tests"}) as rest:
        from signpeer_core.testing import wait_until

        statuses: list[int] = []  # until the server reloaded, ExpiresSoon is unknown (404)

        def sign_soon() -> bool:
            statuses.append(rest.post("/signserver/rest/v1/workers/ExpiresSoon/process", json={"data": "x"}).status_code)
            return statuses[-1] == 200

        wait_until(sign_soon, what="the reload")
        for i in range(12):
            assert rest.post("/signserver/rest/v1/workers/Signer1/process", json={"data": f"doc {i}"}).status_code == 200
        assert rest.post("/signserver/rest/v1/workers/NoKey/process", json={"data": "x"}).status_code == 503
    failed = len(statuses)  # the 404s before the reload and NoKey's 503

    admin = open_page(pki.admin)
    admin.goto(server.url + ADMINWEB + "/overview")
    assert admin.locator("h1").inner_text() == "Overview"
    cards = admin.locator("#worker-counts .card")
    assert cards.nth(0).inner_text().split("\n")[0] == "2"  # Signer1, ExpiresSoon
    assert cards.nth(1).inner_text().split("\n")[0] == "1"  # NoKey
    assert cards.nth(2).inner_text().split("\n")[0] == "1"  # Paused
    assert cards.nth(3).inner_text().startswith(f"13\nsignatures in the last hour ({failed} failed)")
    offline = admin.locator("#offline tbody tr")
    assert offline.count() == 1 and "key 'missing' (DEFAULTKEY) is not in the crypto token" in offline.inner_text()
    timeline = admin.locator("#expiry-timeline g.certificate")
    assert timeline.nth(0).get_attribute("data-worker") == "ExpiresSoon"  # soonest first
    assert "soon" in timeline.nth(0).get_attribute("class")
    first = admin.locator('#expiry-timeline g[data-worker="Signer1"]')
    assert signer1.not_valid_after_utc.strftime("%Y-%m-%d") in first.text_content()
    assert [t.text_content() for t in admin.locator("#expiry-timeline text.axis").all()] == \
        ["0 days", "30 days", "90 days", "180 days", "365 days"]
    assert admin.locator("#signing-rate g.minute").count() >= 1
    assert admin.locator("#ra-queue tbody td").nth(0).inner_text() == "0"
    shot(admin, "overview")

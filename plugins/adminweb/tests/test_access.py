"""Admin Web access control, CSRF, audit identity and input checks, over real mutual TLS (httpx).

The browser tests (test_browser.py) drive the same pages in Chromium; these check the protocol
level exhaustively: every refusal changes nothing, and every change names the administrator.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from signpeer_core.clientrules import ClientRule
from signpeer_core.testing import open_services

PAGES = ["/workers", "/workers/1", "/globalconfig", "/administrators", "/administrators/add"]


def messages(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'class="message[^"]*"[^>]*>([^<]*)<', page)]


def snapshot(home: Path) -> tuple[dict[str, str], dict[int, dict[str, str]], int]:
    """Global properties, worker properties and the number of audit events: what "nothing changed" means."""
    services = open_services(home)
    try:
        store = services.store
        return store.global_properties(), store.all_worker_properties(), len(store.audit_events(limit=100000))
    finally:
        services.close()


def test_without_certificate_the_pages_ask_for_one(web: Any) -> None:
    anonymous = web(None)
    for path in PAGES + ["/auditlog"]:
        r = anonymous.get(path)
        assert r.status_code == 401, path
        assert "Client certificate authentication required" in r.text


def test_unknown_and_peer_system_certificates_get_no_admin_web(web: Any, pki: Any, signpeer: Any) -> None:
    stranger = web(pki.client)
    r = stranger.get("/workers")
    assert r.status_code == 403
    assert "Authorization denied" in r.text and format(pki.client.cert.serial_number, "x") in r.text
    peer = pki.issue_client("Peer CA", dn_suffix=", OU=Peers, O=signpeer tests")
    code, out, _ = signpeer("wspeersystems", "-add", "-cert", str(peer.pem))
    assert code == 0 and "Rule added" in out
    for path in PAGES:
        assert web(peer).get(path).status_code == 403, path


def test_admin_sees_pages_but_audit_log_needs_auditor(web: Any, pki: Any, signpeer: Any) -> None:
    admin = web(pki.admin)
    for path in PAGES:
        r = admin.get(path)
        assert r.status_code == 200, (path, messages(r.text))
    assert admin.get("/auditlog").status_code == 403
    signpeer("wsauditors", "-add", "-cert", str(pki.admin.pem))
    r = admin.get("/auditlog")
    assert r.status_code == 200 and "SET_GLOBAL_PROPERTY" in r.text


def test_auditor_sees_everything_and_changes_nothing(web: Any, pki: Any, signpeer: Any, home: Path) -> None:
    auditor_cred = pki.issue_client("auditor")
    code, out, _ = signpeer("wsauditors", "-add", "-cert", str(auditor_cred.pem))
    assert (code, out.strip()) == (0, "Auditor added")
    auditor = web(auditor_cred)
    for path in PAGES + ["/auditlog"]:
        r = auditor.get(path)
        assert r.status_code == 200, path
        assert "(read-only)" in r.text
    before = snapshot(home)
    auditor.get("/workers/1")
    attempts = [
        ("/workers/1", {"action": "set_property", "key": "FOO", "value": "bar"}),
        ("/workers/1", {"action": "generate_key", "alias": "evil", "keyalg": "ECDSA", "keyspec": "secp256r1"}),
        ("/workers", {"action": "reload"}),
        ("/globalconfig", {"action": "set_property", "scope": "GLOB", "key": "FOO", "value": "bar"}),
        ("/administrators", {"action": "allow_any", "value": "true"}),
        ("/administrators", {"action": "save_peers", "incoming": "on"}),
        ("/administrators/add", {"action": "add", "certSN": "abc", "issuerDN": "CN=x", "roleAdmin": "on"}),
    ]
    for path, data in attempts:
        r = auditor.post(path, data)
        assert r.status_code == 403, (path, data)
        assert "needs the Admin role" in r.text
    assert snapshot(home) == before


def test_archive_auditor_alone_sees_only_the_home_page(web: Any, pki: Any, signpeer: Any) -> None:
    cred = pki.issue_client("archive auditor")
    assert signpeer("wsarchiveauditors", "-add", "-cert", str(cred.pem))[0] == 0
    client = web(cred)
    r = client.get("/")
    assert r.status_code == 200 and "signpeer keeps no archive" in r.text
    assert client.get("/workers").status_code == 403


def test_allow_any_makes_every_verified_certificate_an_admin_but_not_an_auditor(web: Any, pki: Any) -> None:
    admin = web(pki.admin)
    admin.get("/administrators")
    r = admin.post("/administrators", {"action": "allow_any", "value": "true"}, follow_redirects=True)
    assert "Current setting: <strong>Allow any</strong>" in r.text
    stranger = web(pki.client)
    assert stranger.get("/workers").status_code == 200
    assert stranger.get("/auditlog").status_code == 403
    admin.get("/administrators")
    admin.post("/administrators", {"action": "allow_any", "value": "false"})
    assert stranger.get("/workers").status_code == 403


def test_forms_are_protected_against_csrf(web: Any, pki: Any, home: Path, signpeer: Any) -> None:
    admin = web(pki.admin)
    admin.get("/workers/1")
    before = snapshot(home)
    change = {"action": "set_property", "key": "FOO", "value": "bar"}
    r = admin.post("/workers/1", change, token="")
    assert r.status_code == 403 and "security token" in r.text
    r = admin.post("/workers/1", change, token="0" * 64)
    assert r.status_code == 403
    r = admin.post("/workers/1", change, origin="https://evil.example")
    assert r.status_code == 403 and "another site" in r.text
    r = admin.post("/workers/1", change, origin="null")
    assert r.status_code == 403
    r = admin.post("/workers/1", change, origin=None, headers={"Referer": "https://evil.example/form.html"})
    assert r.status_code == 403 and "another site" in r.text
    # A token is bound to the certificate: another administrator's session token does not work for it.
    other = pki.issue_client("second admin")
    signpeer("wsadmins", "-add", "-cert", str(other.pem))
    second = web(other)
    second.get("/workers/1")
    second.http.cookies.clear()
    for name, value in admin.http.cookies.items():
        second.http.cookies.set(name, value)
    r = second.post("/workers/1", change, token=admin.token)
    assert r.status_code == 403
    # A fresh client without the session cookie cannot use a token either.
    fresh = web(pki.admin)
    r = fresh.post("/workers/1", change, token=admin.token)
    assert r.status_code == 403
    after = snapshot(home)
    # Only the second admin was added (with the issuer keys bound beside the rules).
    assert after[0] == before[0] | {"GLOB.WSADMINS": after[0]["GLOB.WSADMINS"],
                                    "GLOB.WSADMINS_ISSUERKEYIDS": after[0]["GLOB.WSADMINS_ISSUERKEYIDS"]}
    assert after[1] == before[1]
    # The real form works (and without Origin, as long as the token is right).
    r = admin.post("/workers/1", change, origin=None)
    assert r.status_code == 303


def test_changes_are_audited_with_the_administrators_identity(web: Any, pki: Any, home: Path) -> None:
    admin = web(pki.admin)
    admin.get("/workers/1")
    r = admin.post("/workers/1", {"action": "set_property", "key": "requestdn", "value": "CN=Renewed"},
                   follow_redirects=True)
    assert "Property REQUESTDN saved" in " ".join(messages(r.text))
    services = open_services(home)
    try:
        event = services.store.audit_events(event="SET_WORKER_CONFIG", limit=1)[0]
    finally:
        services.close()
    assert event.details == {"added:REQUESTDN": "CN=Renewed"}
    assert event.admin.name == "CN=admin, O=signpeer tests"
    assert event.admin.issuer == "CN=signpeer test CA, O=signpeer tests"
    assert event.admin.serial == format(pki.admin.cert.serial_number, "x")


def test_bad_input_shows_a_message_and_changes_nothing(web: Any, pki: Any, home: Path) -> None:
    admin = web(pki.admin)
    admin.get("/workers/1")
    before = snapshot(home)
    cases = [
        ("/workers/1", {"action": "set_property", "key": "", "value": "x"}, "Enter a property name."),
        ("/workers/1", {"action": "set_property", "key": "KEYSTOREPASSWORD", "value": ""},
         "Enter the new value of KEYSTOREPASSWORD"),
        ("/workers/1", {"action": "generate_key", "alias": "k9", "keyalg": "RSA", "keyspec": "banana"}, "banana"),
        ("/workers/1", {"action": "install_certificates", "chain": "not a certificate"}, "not a PEM or DER"),
        ("/workers/1", {"action": "install_certificates",
                        "chain": pki.client.pem.read_text()}, "does not match the current or next key"),
        ("/workers/1", {"action": "remove_key", "alias": "nosuchkey"}, "no key 'nosuchkey'"),
        ("/workers/1", {"action": "remove_key", "alias": "signer00001"}, "I am sure"),
        ("/workers/1", {"action": "generate_csr", "key": "next"}, "has no NEXTCERTSIGNKEY"),
        ("/globalconfig", {"action": "remove_property", "key": "NOPE"}, "There is no global property NOPE."),
        ("/administrators/add", {"action": "add", "certSN": "zz", "issuerDN": "CN=x", "roleAdmin": "on"},
         "Illegal serial number specified: zz"),
        ("/administrators/add", {"action": "add", "certSN": "ab", "issuerDN": "CN=x"}, "Select at least one role."),
        ("/administrators/add", {"action": "add", "certSN": "ab", "issuerDN": "", "roleAdmin": "on"},
         "Enter the issuer DN."),
        ("/administrators/add", {"action": "load", "certificate": "garbage"}, "Unable to load certificate: "),
        ("/administrators", {"action": "clear_incoming", "id": "999"}, "no longer listed"),
        ("/administrators", {"action": "remove", "old_certSN": "abc", "old_issuerDN": "CN=none"},
         "No such administrator"),
    ]
    for path, data, expected in cases:
        r = admin.post(path, data)
        assert r.status_code in (400, 404, 409), (path, data, r.status_code)
        assert any(expected in m for m in messages(r.text)), (expected, messages(r.text))
    after = snapshot(home)
    assert after[:2] == before[:2]
    # Nothing changed; the two refused certificate installs are audited (CERTINSTALLED, FAILURE).
    services = open_services(home)
    try:
        new = services.store.audit_events(limit=after[2] - before[2])
    finally:
        services.close()
    assert [(e.event, e.outcome) for e in new] == [("CERTINSTALLED", "FAILURE")] * 2


def test_add_edit_remove_authorizations_rewrite_the_rule_properties(web: Any, pki: Any, home: Path) -> None:
    admin = web(pki.admin)
    admin.get("/administrators/add")
    r = admin.post("/administrators/add", {"action": "load", "certificate": pki.client.pem.read_text()})
    serial = format(pki.client.cert.serial_number, "x")
    assert f'value="{serial}"' in r.text and 'value="CN=signpeer test CA, O=signpeer tests"' in r.text
    r = admin.post("/administrators/add", {"action": "load_current"})
    assert f'value="{format(pki.admin.cert.serial_number, "x")}"' in r.text
    r = admin.post("/administrators/add", {"action": "add", "certSN": serial.upper(), "issuerDN":
                                           "CN=signpeer test CA, O=signpeer tests", "roleAuditor": "on"},
                   follow_redirects=True)
    assert f"Added authorization for serial number {serial}: Auditor." in messages(r.text)
    props = snapshot(home)[0]
    rule = ClientRule(pki.client.cert.serial_number, "CN=signpeer test CA, O=signpeer tests")
    assert rule.serialize() in props["GLOB.WSAUDITORS"] and rule.serialize() not in props["GLOB.WSADMINS"]
    r = admin.get(f"/administrators?action=edit&sn={serial}&issuer=CN%3Dsignpeer+test+CA%2C+O%3Dsignpeer+tests")
    assert 'id="edit-form"' in r.text
    r = admin.post("/administrators", {"action": "edit", "old_certSN": serial, "old_issuerDN": rule.issuer_dn,
                                       "certSN": serial, "issuerDN": rule.issuer_dn, "roleAdmin": "on",
                                       "roleArchiveAuditor": "on"}, follow_redirects=True)
    assert "Admin, Archive Auditor" in r.text
    props = snapshot(home)[0]
    assert rule.serialize() in props["GLOB.WSADMINS"] and rule.serialize() in props["GLOB.WSARCHIVEAUDITORS"]
    assert rule.serialize() not in props["GLOB.WSAUDITORS"]
    r = admin.get(f"/administrators?action=remove&sn={serial}&issuer=CN%3Dsignpeer+test+CA%2C+O%3Dsignpeer+tests")
    assert "Are you sure you want to remove the administrator" in r.text
    admin.post("/administrators", {"action": "remove", "old_certSN": serial, "old_issuerDN": rule.issuer_dn})
    props = snapshot(home)[0]
    assert all(rule.serialize() not in props.get(f"GLOB.{p}", "")
               for p in ("WSADMINS", "WSAUDITORS", "WSARCHIVEAUDITORS", "WSPEERS"))
    assert web(pki.client).get("/workers").status_code == 403


def test_rule_commands_share_wspeersystems_syntax_and_messages(signpeer: Any, pki: Any) -> None:
    assert signpeer("wsadmins") == (255, "", "Missing operation: -add, -remove or -list\n")
    assert signpeer("wsauditors", "-add")[2] == "Missing option: -certserialno\n"
    assert signpeer("wsauditors", "-add", "-certserialno", "1f")[2] == "Missing option: -issuerdn\n"
    assert signpeer("wsadmins", "-add", "-certserialno", "xyz", "-issuerdn", "CN=x")[2] == \
        "Illegal serial number specified: xyz\n"
    assert signpeer("wsadmins", "-add", "-cert", str(pki.client.pem), "-issuerdn", "CN=x")[2] == \
        "Can't use the option -cert at the same time as -certserialno and -issuerdn\n"
    assert signpeer("wsarchiveauditors", "-add", "-certserialno", "0x00AB", "-issuerdn", "CN=Some CA, O=X") == \
        (0, "Auditor added\n", "")
    assert signpeer("wsarchiveauditors", "-add", "-certserialno", "ab", "-issuerdn", "CN=Some CA, O=X")[1] == \
        "Auditor already exists\n"
    assert signpeer("wsarchiveauditors", "-list")[1] == "Authorizations:\n" + f"{'ab':<20} CN=Some CA, O=X   (issuer key not bound)\n"
    assert signpeer("wsarchiveauditors", "-remove", "-certserialno", "AB", "-issuerdn", "CN=Some CA, O=X") == \
        (0, "Auditor removed\n", "")
    assert signpeer("wsarchiveauditors", "-remove", "-certserialno", "ab", "-issuerdn", "CN=Some CA, O=X") == \
        (0, "", "No such auditor\n")


def test_without_the_peers_module_the_peer_systems_section_is_hidden(home: Path, pki: Any) -> None:
    """As in SignServer CE: no Peer Systems section, the Peer System role dimmed and refused."""
    import httpx

    from signpeer_core.testing import ServerProcess, client_context

    server = ServerProcess(home, (), {"SIGNPEER_DISABLED_PLUGINS": "peerconnector"}).start()
    try:
        with httpx.Client(base_url=server.url, verify=client_context(pki.ca_pem, pki.admin.pair)) as http:
            page = http.get("/signserver/adminweb/administrators").text
            assert "Peer Systems" not in page and "Allow incoming connections" not in page
            add = http.get("/signserver/adminweb/administrators/add").text
            assert re.search(r'<label class="dimmed"><input type="checkbox" name="rolePeerSystem"\s+disabled>', add)
            token = re.search(r'name="csrf_token" value="([^"]+)"', add).group(1)  # type: ignore[union-attr]
            r = http.post("/signserver/adminweb/administrators/add", headers={"Origin": server.url}, data={
                "csrf_token": token, "action": "add", "certSN": "ab", "issuerDN": "CN=x", "rolePeerSystem": "on"})
            assert r.status_code == 400 and "needs the Peer Systems module" in r.text
    finally:
        server.stop()


def test_viewing_never_reloads_and_an_offline_token_can_be_activated(web: Any, pki: Any, home: Path) -> None:
    admin = web(pki.admin)
    admin.get("/workers/1")
    # Without its stored password the token stays offline after Reload; Activate brings it online.
    r = admin.post("/workers/1", {"action": "remove_property", "key": "KEYSTOREPASSWORD"}, follow_redirects=True)
    assert "Property KEYSTOREPASSWORD removed. Click Reload to make it active." in messages(r.text)
    assert "reload" in r.text.lower() and 'class="status active"' in r.text  # still the loaded worker
    r = admin.post("/workers/1", {"action": "reload"}, follow_redirects=True)
    assert 'class="status offline"' in r.text and 'name="authcode"' in r.text
    r = admin.post("/workers/1", {"action": "activate", "authcode": "wrong"})
    assert r.status_code in (400, 403) and messages(r.text)
    r = admin.post("/workers/1", {"action": "activate", "authcode": "foo123"}, follow_redirects=True)
    assert "Crypto token activated (in this server process)." in messages(r.text)
    assert 'class="status active"' in r.text and "signer00001" in r.text
    # A worker created in the database since the last reload is shown as not loaded until Reload.
    services = open_services(home)
    try:
        services.store.update_worker(7, {"NAME": "Later", "IMPLEMENTATION_CLASS": "PlainSigner"})
    finally:
        services.close()
    r = admin.get("/workers")
    assert "Later" in r.text and "not loaded" in r.text
    r = admin.get("/workers/7")
    assert "This worker is not loaded yet" in r.text
    r = admin.get("/workers")
    assert "not loaded" in r.text  # viewing did not load it
    admin.post("/workers", {"action": "reload"})
    assert "not loaded" not in admin.get("/workers").text


def test_forms_work_across_server_processes(home: Path, pki: Any) -> None:
    """With --workers 2 every process checks CSRF tokens with the same key (derived from the data
    protection key; across nodes: test_browser_cluster.py)."""
    import httpx

    from signpeer_core.testing import ServerProcess, client_context

    server = ServerProcess(home, ("--workers", "2"), None).start()
    try:
        context = client_context(pki.ca_pem, pki.admin.pair)
        with httpx.Client(base_url=server.url, verify=context) as first:
            page = first.get("/signserver/adminweb/globalconfig").text
            token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
            cookies = dict(first.cookies.items())
        for i in range(8):  # a new connection each time: the kernel spreads them over both processes
            with httpx.Client(base_url=server.url, verify=context, cookies=cookies) as client:
                r = client.post("/signserver/adminweb/globalconfig", headers={"Origin": server.url}, data={
                    "csrf_token": token, "action": "set_property", "scope": "GLOB", "key": f"TEST{i}", "value": "x"})
                assert r.status_code == 303, r.text
    finally:
        server.stop()
    services = open_services(home)
    try:
        assert {f"GLOB.TEST{i}" for i in range(8)} <= set(services.store.global_properties())
    finally:
        services.close()


def test_global_configuration_set_edit_reload_remove(web: Any, pki: Any, home: Path) -> None:
    admin = web(pki.admin)
    admin.get("/globalconfig")
    r = admin.post("/globalconfig", {"action": "set_property", "scope": "GLOB", "key": "myprop", "value": "one"},
                   follow_redirects=True)
    assert "Property GLOB.MYPROP saved. Click Reload to make it active." in messages(r.text)
    assert re.search(r"GLOB\.MYPROP\s*<span class=\"badge\"[^>]*>reload pending", r.text)
    r = admin.post("/globalconfig", {"action": "set_property", "scope": "NODE", "key": "other", "value": "two"},
                   follow_redirects=True)
    node_key = next(k for k in snapshot(home)[0] if k.endswith(".OTHER"))
    assert node_key.startswith("NODE.") and node_key in r.text
    r = admin.get("/globalconfig?edit=GLOB.MYPROP")
    assert 'aria-label="Value of GLOB.MYPROP">one</textarea>' in r.text
    r = admin.post("/globalconfig", {"action": "reload"}, follow_redirects=True)
    assert "reload pending" not in r.text
    r = admin.post("/globalconfig", {"action": "remove_property", "key": "GLOB.MYPROP"}, follow_redirects=True)
    assert "Property GLOB.MYPROP removed. Click Reload to make it active." in messages(r.text)
    assert "removed; still active until Reload" in r.text
    services = open_services(home)
    try:
        events = [e.event for e in services.store.audit_events(admin="CN=admin, O=signpeer tests", limit=10)]
    finally:
        services.close()
    assert events[:4] == ["REMOVE_GLOBAL_PROPERTY", "RELOAD_WORKER_CONFIG", "SET_GLOBAL_PROPERTY",
                          "SET_GLOBAL_PROPERTY"]

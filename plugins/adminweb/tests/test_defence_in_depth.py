"""Defence in depth on the Admin Web: security headers on every page, and the CSRF origin check
against the configured server names rather than the request's ``Host`` header (issue 11, item 23)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from signpeer_core.testing import ServerProcess, client_context, open_services

ADMINWEB = "/signserver/adminweb"

CHANGE = {"action": "set_property", "key": "FOO", "value": "bar"}


def test_pages_carry_csp_hsts_and_nosniff(web: Any, pki: Any) -> None:
    admin = web(pki.admin)
    for path, status in [("/workers", 200), ("/workers/1", 200), ("/auditlog", 403)]:
        r = admin.get(path)
        assert r.status_code == status, path
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert "default-src 'none'" in r.headers["content-security-policy"]
    anonymous = web(None).get("/workers")
    assert anonymous.status_code == 401 and anonymous.headers["strict-transport-security"]


def test_a_forged_host_header_does_not_make_a_foreign_origin_pass(web: Any, pki: Any, signpeer: Any) -> None:
    admin = web(pki.admin)
    admin.get("/workers/1")
    r = admin.post("/workers/1", CHANGE, origin="https://evil.example", headers={"Host": "evil.example"})
    assert r.status_code == 403 and "another site" in r.text
    r = admin.post("/workers/1", CHANGE, origin=None, headers={"Host": "evil.example",
                                                                "Referer": "https://evil.example/x"})
    assert r.status_code == 403
    # Another port on the same host is another origin.
    r = admin.post("/workers/1", CHANGE, origin="https://127.0.0.1:1")
    assert r.status_code == 403
    code, out, _ = signpeer("getconfig", "1")
    assert "FOO" not in out
    # The server's own names (from its certificate: localhost, 127.0.0.1) with the listening port pass.
    port = admin.url.rsplit(":", 1)[1]
    for own in (admin.url, f"https://localhost:{port}"):
        admin.get("/workers/1")
        assert admin.post("/workers/1", CHANGE, origin=own).status_code == 303, own


def _post_with_origin(server: ServerProcess, pki: Any, origin: str) -> int:
    with httpx.Client(base_url=server.url, verify=client_context(pki.ca_pem, pki.admin.pair), timeout=30) as http:
        page = http.get(ADMINWEB + "/workers/1")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token, page.text
        return http.post(ADMINWEB + "/workers/1", data={"csrf_token": token.group(1), **CHANGE},
                         headers={"Origin": origin}).status_code


def test_server_name_replaces_the_certificate_names(home: Path, pki: Any,
                                                    start_server: Callable[..., ServerProcess]) -> None:
    settings = home / "signpeer.toml"
    settings.write_text(settings.read_text() + 'server_name = "signer.example.org, proxy.example.org:9443"\n')
    server = start_server(home)
    assert _post_with_origin(server, pki, server.url) == 403
    assert _post_with_origin(server, pki, "https://proxy.example.org:9443") == 303
    assert _post_with_origin(server, pki, f"https://signer.example.org:{server.port}") == 303
    assert _post_with_origin(server, pki, "https://signer.example.org") == 403  # another port


def test_refused_admin_web_access_is_audited(web: Any, pki: Any, home: Path) -> None:
    stranger = web(pki.client)
    for _ in range(3):
        assert stranger.get("/workers").status_code == 403
    assert web(None).get("/workers").status_code == 401
    services = open_services(home)
    try:
        refused = services.store.audit_events(event="ACCESS_CONTROL")
    finally:
        services.close()
    assert sorted((e.module, e.outcome, e.details["RESOURCE"], bool(e.admin.serial)) for e in refused) == [
        ("ADMINWEB", "FAILURE", ADMINWEB + "/workers", False), ("ADMINWEB", "FAILURE", ADMINWEB + "/workers", True)]

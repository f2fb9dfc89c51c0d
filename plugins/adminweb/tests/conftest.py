"""Fixtures for the Admin Web tests: a data directory with a signer, a real ``signpeer serve``,
Admin Web clients.

Built on the shared fixtures of :mod:`signpeer_core.testing.fixtures` (``pki``, ``home``,
``signpeer``, ``start_server``). The server runs as a subprocess with mutual TLS on
loopback; the tests talk to it with httpx (protocol-level checks) or with headless Chromium
driven by Playwright (``test_browser.py``), both presenting real client certificates.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from signpeer_core.testing import PKI, Credential, ServerProcess, add_signer, client_context, open_services

ADMINWEB = "/signserver/adminweb"
CHROMIUM = os.environ.get("SIGNPEER_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def home(home: Path, pki: PKI) -> Path:
    """The shared data directory plus one CMS signer (id 1, "Signer1")."""
    services = open_services(home)
    try:
        add_signer(services, pki, "Signer1", implementation="CMSSigner")
    finally:
        services.close()
    return home


@pytest.fixture
def server(home: Path, start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server(home)


@pytest.fixture(scope="module")
def browser(pki: PKI) -> Iterator[Any]:
    """Headless Chromium (Debian's ``chromium``, or ``SIGNPEER_CHROMIUM``) driven by Playwright, one
    per test module; skips when either is missing (see ``test_browser.py``)."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install 'signpeer-adminweb[test]'")
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (make system-deps does)")
    saved = os.environ.get("NODE_EXTRA_CA_CERTS")
    os.environ["NODE_EXTRA_CA_CERTS"] = str(pki.ca_pem)  # read when the driver starts
    try:
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                # --no-sandbox: Chromium refuses to run as root with its sandbox; the network is closed,
                # so no background requests (updates, safe browsing) either.
                args=["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                      "--disable-dev-shm-usage", "--no-first-run"])
            yield browser
            browser.close()
    finally:
        if saved is None:
            os.environ.pop("NODE_EXTRA_CA_CERTS", None)
        else:
            os.environ["NODE_EXTRA_CA_CERTS"] = saved


class WebClient:
    """An httpx client for the Admin Web that reads the CSRF token from the last page it got."""

    def __init__(self, server: ServerProcess, pki: PKI, cred: Credential | None) -> None:
        self.url = server.url
        self.http = httpx.Client(base_url=server.url, verify=client_context(pki.ca_pem, cred.pair if cred else None),
                                 timeout=30)
        self.token = ""

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.get(ADMINWEB + path, **kwargs)
        found = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
        if found:
            self.token = found.group(1)
        return response

    def post(self, path: str, data: dict[str, str], origin: str | None = "self", token: str | None = None,
             **kwargs: Any) -> httpx.Response:
        headers = {} if origin is None else {"Origin": self.url if origin == "self" else origin}
        headers.update(kwargs.pop("headers", {}))
        body = {"csrf_token": self.token if token is None else token, **data}
        return self.http.post(ADMINWEB + path, data=body, headers=headers, **kwargs)

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def web(server: ServerProcess, pki: PKI) -> Iterator[Callable[[Credential | None], WebClient]]:
    clients: list[WebClient] = []

    def make(cred: Credential | None) -> WebClient:
        client = WebClient(server, pki, cred)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


def messages(html: str) -> list[str]:
    """The texts of the page's status and error messages (HTML entities decoded)."""
    import html as html_lib

    return [html_lib.unescape(m) for m in re.findall(r'class="message[^"]*"[^>]*>([^<]*)<', html)]


__all__ = ["ADMINWEB", "WebClient", "add_signer", "messages"]

"""Shared fixtures; the helpers behind them live in :mod:`signpeer_core.testing` (importable by tests).

* ``pki`` (session, in the root ``conftest.py``): development CA, server certificate (localhost/127.0.0.1), ``pki.admin``
  and ``pki.client`` client certificates; ``pki.issue_client(cn)``, ``pki.issue_signer(...)``.
* ``signpeer_home``: a data directory as ``signpeer init`` leaves it, without workers, with the
  administrator certificate in ``WSADMINS`` and port 0 (a free port) in ``signpeer.toml``.
* ``services``: :class:`Services` opened on ``signpeer_home`` (closed afterwards). Add a signer
  with ``add_signer(services, pki, "Name", implementation="CMSSigner", AUTHTYPE=...)``.
* ``start_server(home, *serve_args, env=None)`` (in the root ``conftest.py``, shared with the plugins):
  a running ``signpeer serve`` subprocess
  (:class:`ServerProcess`: ``.url``, ``.port``, ``.log()``), stopped after the test.
* ``https_client(server_or_url, cert=None|"admin"|"client"|Credential|(cert, key))``: an httpx
  client trusting the development CA, keeping connections alive, sending
  ``X-Keyfactor-Requested-With``; closed after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from signpeer_core.testing import (
    PKI,
    Credential,
    ServerProcess,
    client_context,
    open_services,
    write_home,
)


@pytest.fixture
def signpeer_home(tmp_path: Path, pki: PKI) -> Path:
    return write_home(tmp_path / "home", pki)


@pytest.fixture
def services(signpeer_home: Path) -> Iterator[Any]:
    s = open_services(signpeer_home)
    yield s
    s.close()



@pytest.fixture
def https_client(pki: PKI) -> Iterator[Callable[..., httpx.Client]]:
    """``https_client(server_or_url, cert=None|"admin"|"client"|Credential|(cert, key))`` → httpx.Client."""
    clients: list[httpx.Client] = []

    def make(target: ServerProcess | str, cert: str | tuple[str, str] | Credential | None = None,
             **kwargs: Any) -> httpx.Client:
        url = target.url if isinstance(target, ServerProcess) else target
        pair: tuple[str, str] | None
        if cert == "admin":
            pair = pki.admin.pair
        elif cert == "client":
            pair = pki.client.pair
        elif isinstance(cert, Credential):
            pair = cert.pair
        else:
            pair = cert  # type: ignore[assignment]
        headers = {"X-Keyfactor-Requested-With": "tests"} | kwargs.pop("headers", {})
        client = httpx.Client(base_url=url, verify=client_context(pki.ca_pem, pair), headers=headers,
                              timeout=kwargs.pop("timeout", 30), **kwargs)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()

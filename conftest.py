"""Test-session set-up shared by core and plugin tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def pytest_configure(config: object) -> None:
    # Before any test can load the PKCS#11 module in this process: see session_softhsm().
    from signpeer_core.testing import session_softhsm

    session_softhsm()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> object:
    """The test PKI (:func:`signpeer_core.testing.make_pki`): development CA, server certificate,
    ``pki.admin`` and ``pki.client`` client certificates; one per test session."""
    from signpeer_core.testing import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def start_server() -> Iterator[Callable[..., object]]:
    """``start_server(home, *serve_args, env=None, timeout=20)``: a running ``signpeer serve``
    (:class:`signpeer_core.testing.ServerProcess`), stopped after the test."""
    from signpeer_core.testing import ServerProcess

    servers: list[ServerProcess] = []

    def start(home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 20.0) -> ServerProcess:
        server = ServerProcess(home, tuple(args), env)
        servers.append(server)
        return server.start(timeout)

    yield start
    for server in servers:
        server.stop()

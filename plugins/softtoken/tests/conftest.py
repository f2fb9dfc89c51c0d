"""Fixtures for the soft token tests: a data directory with a real SQLite store and real Services."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from signpeer_core.services import Services
from signpeer_core.settings import load_settings
from signpeer_core.storage import open_store


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def configure(home: Path) -> Callable[..., None]:
    """Write worker properties into the store of ``home`` (as ``signpeer setproperties`` would)."""

    def write(worker_id: int, props: dict[str, str], remove: tuple[str, ...] = ()) -> None:
        store = open_store(f"sqlite:///{home / 'signpeer.db'}")
        try:
            store.update_worker(worker_id, props, remove=remove)
        finally:
            store.close()

    return write


@pytest.fixture
def open_services(home: Path) -> Iterator[Callable[[], Services]]:
    """Open a Services on ``home``; each call is what one process (server or CLI) would have."""
    opened: list[Services] = []

    def open_one() -> Services:
        services = Services.open(load_settings(home))
        opened.append(services)
        return services

    yield open_one
    for services in opened:
        services.close()


@pytest.fixture
def run_openssl() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the openssl command line: the independent check of what the token writes and signs."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)

    return run

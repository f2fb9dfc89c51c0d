"""Fixtures for the soft token tests: a data directory with a real SQLite store and real Services."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from signpeer_core.services import Services
from signpeer_core.settings import load_settings
from signpeer_core.testing import open_store_of
from signpeer_softtoken.pkcs12 import Keystore, dump_keystore


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def configure(home: Path) -> Callable[..., None]:
    """Write worker properties into the store of ``home`` (as ``signpeer setproperties`` would).

    A keystore file named by ``KEYSTOREPATH`` that does not exist is created empty, protected
    by ``KEYSTOREPASSWORD`` (as ``signpeer generatekey -create`` would), unless
    ``create_keystore=False``: the token itself never creates a missing file."""

    def write(worker_id: int, props: dict[str, str], remove: tuple[str, ...] = (),
              create_keystore: bool = True) -> None:
        path, password = props.get("KEYSTOREPATH"), props.get("KEYSTOREPASSWORD")
        if create_keystore and path and password and props.get("KEYSTORETYPE", "PKCS12").upper() == "PKCS12":
            file = home / path
            if not file.exists():
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_bytes(dump_keystore(Keystore(), password))
                file.chmod(0o600)
        store = open_store_of(home)
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

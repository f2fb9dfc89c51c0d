"""A damaged database, a read-only data directory: every command says which file and what to do,
read-only commands work, a server keeps signing and answers 503 to writes (issue 11, item 16).

Tests run as root, whom file modes do not stop: the commands and the server run under ``setpriv``
without ``CAP_DAC_OVERRIDE``, so a mode of 0444/0555 holds for them as for any other user."""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from signpeer_core.testing import ServerProcess, add_signer, open_services, processes, server_env
from signpeer_core.testing.postgres import on_postgresql

WITHOUT_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
               "--inh-caps=-dac_override,-dac_read_search"]
# Each test here damages or locks down SQLite's file in the data directory.
pytestmark = pytest.mark.skipif(on_postgresql(), reason="about the SQLite database file: runs in the SQLite suite")
needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")


def run(home: Path, *args: str, unprivileged: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = processes.signpeer_cmd(*args)
    return subprocess.run((WITHOUT_DAC if unprivileged else []) + cmd, env=server_env(home), capture_output=True,
                          text=True, timeout=120, cwd=home)


@pytest.fixture
def signer_home(home: Path, pki: Any) -> Path:
    services = open_services(home)
    try:
        add_signer(services, pki, "Survivor", AUTHTYPE="NOAUTH")
    finally:
        services.close()
    return home


@pytest.fixture
def read_only(signer_home: Path) -> Iterator[Path]:
    """The data directory and its database read-only (``run/`` stays writable for server.json)."""
    home = signer_home
    (home / "run").mkdir(exist_ok=True)
    db = home / "signpeer.db"
    db.chmod(0o444)
    home.chmod(0o555)
    yield home
    home.chmod(0o700)
    db.chmod(0o600)


def test_a_damaged_database_is_named_by_every_command(signer_home: Path) -> None:
    db = signer_home / "signpeer.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"this is not an SQLite database, just damaged bytes " * 100)
    for args in (("getstatus", "brief", "all"), ("getconfig", "Survivor"), ("auditlog",), ("auditlog", "--verify"),
                 ("setproperty", "Survivor", "FOO", "bar"), ("reload", "all")):
        result = run(signer_home, *args)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert f"the database {db} is damaged" in result.stderr and "restore" in result.stderr, (args, result.stderr)


@needs_setpriv
def test_read_only_commands_work_on_a_read_only_data_directory(read_only: Path) -> None:
    for args in (("getstatus", "brief", "all"), ("getconfig", "Survivor"), ("auditlog", "--limit", "5"),
                 ("auditlog", "--verify")):
        result = run(read_only, *args, unprivileged=True)
        assert result.returncode == 0, (args, result.stderr)
        assert "Traceback" not in result.stderr
    result = run(read_only, "setproperty", "Survivor", "FOO", "bar", unprivileged=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"data directory not writable: {read_only / 'signpeer.db'}" in result.stderr, result.stderr
    assert not stat.S_IMODE(os.stat(read_only).st_mode) & 0o200  # nothing made it writable again


@needs_setpriv
def test_a_server_on_a_read_only_data_directory_signs_and_answers_503_to_writes(
        read_only: Path, monkeypatch: pytest.MonkeyPatch, start_server: Callable[..., ServerProcess],
        https_client: Callable[..., Any]) -> None:
    monkeypatch.setattr(processes, "signpeer_cmd", lambda *args: WITHOUT_DAC + [
        sys.executable, "-m", "signpeer_core.cli.main", *args])
    server = start_server(read_only)
    client = https_client(server)
    signed = client.post("/signserver/rest/v1/workers/Survivor/process",
                         json={"data": base64.b64encode(b"still signing").decode()})
    assert signed.status_code == 200, signed.text
    admin = https_client(server, cert="admin")
    refused = admin.post("/signserver/rest/v1/workers/Survivor/deactivate")
    assert refused.status_code == 503, refused.text
    assert "data directory not writable" in refused.json()["error"]
    again = client.post("/signserver/rest/v1/workers/Survivor/process",
                        json={"data": base64.b64encode(b"and still").decode()})
    assert again.status_code == 200, again.text  # the refused deactivation changed nothing
    assert "Traceback" not in server.log()

"""The database and its WAL/SHM files are 0600 wherever they are (issue 11, item 19)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from signpeer_core.storage import open_store


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _modes(db: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in db.parent.iterdir() if p.name.startswith(db.name)}


def test_a_database_outside_the_data_directory_is_private(tmp_path: Path, loose_umask: None) -> None:
    db = tmp_path / "elsewhere" / "deep" / "signpeer.db"
    store = open_store(f"sqlite:///{db}")
    try:
        store.update_global({"GLOB.X": "1"})
        modes = _modes(db)
        assert set(modes) == {"signpeer.db", "signpeer.db-wal", "signpeer.db-shm"}
        assert set(modes.values()) == {0o600}, modes
        assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    finally:
        store.close()


def test_a_readable_database_is_made_private(tmp_path: Path, loose_umask: None,
                                             caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "signpeer.db"
    open_store(f"sqlite:///{db}").close()
    os.chmod(db, 0o644)
    store = open_store(f"sqlite:///{db}")
    try:
        store.update_global({"GLOB.X": "1"})
        assert set(_modes(db).values()) == {0o600}
        assert "open to other users (mode 644); it is now 600" in caplog.text
    finally:
        store.close()

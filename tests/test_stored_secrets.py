"""Secrets in the database are encrypted with a key kept outside it (issue 11, item 20)."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from signpeer_core.errors import ConfigurationError
from signpeer_core.settings import load_settings
from signpeer_core.storage import open_store
from signpeer_core.storage.protection import KeySource

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def key_files_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the key file beside an SQLite database: without the one key a
    PostgreSQL test run gives every process (``SIGNPEER_KEY``)."""
    monkeypatch.delenv("SIGNPEER_KEY", raising=False)


def raw_value(db: Path, key: str) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("SELECT value FROM worker_properties WHERE key = ?", (key,)).fetchone()[0])


def test_token_passwords_are_stored_encrypted_and_read_in_clear(tmp_path: Path) -> None:
    db = tmp_path / "signpeer.db"
    store = open_store(f"sqlite:///{db}")
    try:
        store.update_worker(1, {"NAME": "W", "KEYSTOREPASSWORD": PASSWORD, "PIN": "1234", "KEYSTOREPATH": "ks.p12"})
        store.update_global({"GLOB.SMTP_PASSWORD": PASSWORD})
        assert store.worker_properties(1)["KEYSTOREPASSWORD"] == PASSWORD
        assert store.all_worker_properties()[1]["PIN"] == "1234"
        assert store.global_properties()["GLOB.SMTP_PASSWORD"] == PASSWORD
        for f in tmp_path.glob("signpeer.db*"):  # the database and its WAL: nowhere in clear
            assert PASSWORD.encode() not in f.read_bytes(), f
    finally:
        store.close()
    assert raw_value(db, "KEYSTOREPASSWORD").startswith("enc:v1:")
    assert raw_value(db, "KEYSTOREPATH") == "ks.p12"
    key_file = tmp_path / "signpeer.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_database_without_its_key_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "signpeer.db"
    store = open_store(f"sqlite:///{db}")
    store.update_worker(1, {"KEYSTOREPASSWORD": PASSWORD})
    store.close()
    (tmp_path / "signpeer.key").rename(tmp_path / "elsewhere.key")
    with pytest.raises(ConfigurationError, match=r"signpeer.key is missing.*restore it"):
        open_store(f"sqlite:///{db}")
    assert not (tmp_path / "signpeer.key").exists()  # no new key that could not read the secrets
    (tmp_path / "signpeer.key").write_text(os.urandom(32).hex())
    with pytest.raises(ConfigurationError, match="is not the key of the database"):
        open_store(f"sqlite:///{db}")
    store = open_store(f"sqlite:///{db}", key=KeySource(f"sqlite:///{db}", key_file=str(tmp_path / "elsewhere.key")))
    try:
        assert store.worker_properties(1)["KEYSTOREPASSWORD"] == PASSWORD
    finally:
        store.close()


def test_plaintext_secrets_of_an_older_database_are_encrypted_once(tmp_path: Path) -> None:
    db = tmp_path / "signpeer.db"
    open_store(f"sqlite:///{db}").close()
    with sqlite3.connect(db) as conn:  # as a signpeer before encryption left it
        conn.execute("INSERT INTO worker_properties VALUES (1, 'KEYSTOREPASSWORD', ?)", (PASSWORD,))
        conn.execute("INSERT INTO worker_properties VALUES (1, 'NAME', 'Old')")
        conn.execute("DELETE FROM meta WHERE key LIKE 'protection.%' OR key = 'audit.head'")
    (tmp_path / "signpeer.key").unlink()
    store = open_store(f"sqlite:///{db}")
    try:
        assert store.worker_properties(1) == {"KEYSTOREPASSWORD": PASSWORD, "NAME": "Old"}
    finally:
        store.close()
    assert raw_value(db, "KEYSTOREPASSWORD").startswith("enc:v1:")
    assert raw_value(db, "NAME") == "Old"


def test_the_key_can_come_from_the_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = os.urandom(32).hex()
    db = home.parent / "other" / "signpeer.db"
    monkeypatch.setenv("SIGNPEER_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("SIGNPEER_KEY", key)
    settings = load_settings(home)
    store = open_store(settings.database, key=KeySource.for_settings(settings))
    try:
        store.update_worker(1, {"PIN": "4321"})
    finally:
        store.close()
    assert not (db.parent / "signpeer.key").exists()
    assert raw_value(db, "PIN").startswith("enc:v1:")
    monkeypatch.setenv("SIGNPEER_KEY", os.urandom(32).hex())
    with pytest.raises(ConfigurationError, match="SIGNPEER_KEY.*is not the key of the database"):
        open_store(settings.database, key=KeySource.for_settings(load_settings(home)))


def test_a_damaged_secret_is_reported_not_returned(tmp_path: Path) -> None:
    db = tmp_path / "signpeer.db"
    store = open_store(f"sqlite:///{db}")
    store.update_worker(1, {"KEYSTOREPASSWORD": PASSWORD})
    with sqlite3.connect(db) as conn:
        value = raw_value(db, "KEYSTOREPASSWORD")
        conn.execute("UPDATE worker_properties SET value = ? WHERE key = 'KEYSTOREPASSWORD'",
                     (value[:-6] + ("AAAAAA" if not value.endswith("AAAAAA") else "BBBBBB"),))
    try:
        with pytest.raises(ConfigurationError, match="cannot be decrypted.*restore both from the same backup"):
            store.worker_properties(1)
    finally:
        store.close()

"""A damaged INTERNAL keystore is reported as such, and temporary files left by a write that was
killed are removed (issue 11, item 16)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text

from signpeer_core.testing import open_store_of
from signpeer_softtoken.token import SoftCryptoToken

PASSWORD = "foo123"
CRYPTO = {
    "NAME": "CryptoTokenP12", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
    "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "KeystoreCryptoToken", "KEYSTORETYPE": "PKCS12",
    "KEYSTOREPATH": "keystore.p12", "KEYSTOREPASSWORD": PASSWORD,
}


def token_of(services: Any) -> SoftCryptoToken:
    token = services.runtime.get("CryptoTokenP12").token
    assert isinstance(token, SoftCryptoToken)
    return token


def test_a_damaged_internal_keystore_says_wrong_password_or_damaged(home: Path, configure: Any,
                                                                     open_services: Any) -> None:
    props = {**CRYPTO, "KEYSTORETYPE": "INTERNAL"}
    del props["KEYSTOREPATH"]
    configure(1, props)
    token_of(open_services()).generate_key("k", "ECDSA", "P-256")
    store = open_store_of(home)  # SQLite or PostgreSQL, as the data directory says
    try:
        with store.database.transaction() as db:
            blob = bytearray(db.execute(text("SELECT data FROM keystores WHERE worker_id = 1")).scalar_one())
            middle = len(blob) // 2
            blob[middle:middle + 16] = bytes(b ^ 0xFF for b in blob[middle:middle + 16])
            db.execute(text("UPDATE keystores SET data = :data WHERE worker_id = 1"), {"data": bytes(blob)})
    finally:
        store.close()
    services = open_services()
    assert not token_of(services).is_active
    reasons = " ".join(services.runtime.get("CryptoTokenP12").status().reasons)
    assert "wrong password or damaged keystore" in reasons and "INTERNAL keystore of worker 1" in reasons
    assert "restore the keystore from a backup" in reasons


def test_temporary_files_of_a_killed_write_are_removed(home: Path, configure: Any, open_services: Any) -> None:
    configure(1, CRYPTO)
    token_of(open_services()).generate_key("k", "ECDSA", "P-256")
    keystore = home / "keystore.p12"
    before = keystore.read_bytes()
    stale = [home / ".keystore.p12.x8k2m9q1.tmp", home / ".keystore.p12.a1b2c3d4.tmp"]
    for path in stale:
        path.write_bytes(before[: len(before) // 3])  # what a write killed half-way leaves
    other = home / ".other.p12.zzzz.tmp"
    other.write_bytes(b"not ours")
    services = open_services()  # auto-activation reads the keystore under its lock
    assert token_of(services).is_active and token_of(services).key_aliases() == ["k"]
    assert not any(p.exists() for p in stale)
    assert other.exists() and keystore.read_bytes() == before

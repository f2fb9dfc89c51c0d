"""How often an INTERNAL keystore is read: once per token on a reload, never again after a write.

A soft token re-reads its keystore on every reload (so keys another process generated or removed
show), and each read is a database statement. A reload of one worker reads one keystore however
many workers there are; a full reload reads each kept token's keystore once. Counted with SQLite's
trace callback on the store's connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from signpeer_core.services import Services

PASSWORD = "foo123"


def internal_token(name: str) -> dict[str, str]:
    return {"NAME": name, "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
            "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "SoftCryptoToken", "KEYSTORETYPE": "INTERNAL",
            "KEYSTOREPASSWORD": PASSWORD}


@contextmanager
def keystore_statements(services: Services) -> Iterator[list[str]]:
    """The statements on the ``keystores`` table run meanwhile (reads as ``SELECT``)."""
    seen: list[str] = []
    conn = services.store.database._connection().connection.driver_connection
    conn.set_trace_callback(lambda sql: seen.append(" ".join(sql.split())) if "keystores" in sql else None)
    try:
        yield seen
    finally:
        conn.set_trace_callback(None)


def reads(statements: list[str]) -> int:
    return sum(1 for s in statements if s.upper().startswith("SELECT"))


@pytest.mark.parametrize("workers", [2, 6])
def test_reload_reads_each_keystore_once(workers: int, configure: Callable[..., None],
                                         open_services: Callable[[], Services]) -> None:
    for wid in range(1, workers + 1):
        configure(wid, internal_token(f"Token{wid}"))
    services = open_services()  # loads and activates (creating the empty keystores)
    assert all(services.runtime.get(wid).token.is_active for wid in range(1, workers + 1))

    with keystore_statements(services) as full:
        services.runtime.load()  # every token is kept: each re-reads its keystore
    assert reads(full) == len(full) == workers, full

    with keystore_statements(services) as one:
        services.runtime.reload_workers([2])
    assert reads(one) == len(one) == 1, one  # the same with 2 workers or 6


def test_a_change_reads_once_and_writes_once(configure: Callable[..., None],
                                             open_services: Callable[[], Services]) -> None:
    configure(1, internal_token("Token"))
    services = open_services()
    token: Any = services.runtime.get(1).token
    with keystore_statements(services) as change:
        token.generate_key("k1", "ECDSA", "P-256")
    # Read under the lock, write in one transaction; the stamp of what was written needs no read.
    assert reads(change) == 1 and sum(1 for s in change if s.upper().startswith("INSERT")) == 1, change


def test_reload_picks_up_keys_of_another_process(configure: Callable[..., None],
                                                 open_services: Callable[[], Services]) -> None:
    configure(1, internal_token("Token"))
    server = open_services()
    token: Any = server.runtime.get(1).token
    other: Any = open_services().runtime.get(1).token  # e.g. the CLI
    other.generate_key("from-cli", "ECDSA", "P-256")
    assert "from-cli" not in token._keys
    server.runtime.reload_workers([1])
    assert server.runtime.get(1).token is token  # kept, and it read the change
    assert token.private_key("from-cli") is not None
    other.remove_key("from-cli")
    server.runtime.load()
    assert "from-cli" not in token._keys


def test_another_process_next_key_is_followed_without_a_build(configure: Callable[..., None],
                                                              open_services: Callable[[], Services]) -> None:
    """A renewal's ``nextkey`` published by another process (serve --workers 2): catching up puts
    a copy of the worker in place, its kept token re-reads the keystore, and a CSR for the new key
    works in this process at once."""
    from signpeer_core.admin import WorkerAdmin
    from signpeer_core.administration.publishing import reload_if_behind
    from signpeer_core.storage import Admin

    configure(1, {**internal_token("Renewed"), "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "PlainSigner",
                  "DEFAULTKEY": "signer00001", "KEYALG": "ECDSA", "KEYSPEC": "secp256r1"})
    server, other = open_services(), open_services()
    server.runtime.get(1).token.generate_key("signer00001", "ECDSA", "secp256r1")
    for services in (server, other):
        services.runtime.load()
    loaded, builds = server.runtime.get(1), server.runtime.builds
    token: Any = loaded.token
    kept_key = token._keys["signer00001"]

    alias = WorkerAdmin(other, Admin("peer")).next_key(1, publish=True).alias
    with keystore_statements(server) as seen:
        assert reload_if_behind(server)
    assert reads(seen) == 1  # the token's one re-read
    assert server.runtime.builds == builds  # not built
    copy = server.runtime.get(1)
    assert copy is not loaded and copy.token is token and copy.config.get_str("NEXTCERTSIGNKEY") == alias
    assert token._keys["signer00001"] is kept_key and alias in token._keys  # only the new key decoded
    assert server.runtime.generation == server.store.config_generation()
    csr = WorkerAdmin(server, Admin("peer")).generate_csr(1, next_key=None)
    assert csr.alias == alias and csr.for_next_key

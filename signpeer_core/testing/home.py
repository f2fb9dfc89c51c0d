"""Data directories for tests: as ``signpeer init`` leaves them, opened Services, signers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from signpeer_core.clientrules import ClientRule, serialize_rules
from signpeer_core.testing.pki import PKI
from signpeer_core.testing.plugin import enable as enable_test_plugin

#: The password of the tokens :func:`add_signer` makes (their ``KEYSTOREPASSWORD``).
PASSWORD = "foo123"
#: ``CRYPTOTOKEN_IMPLEMENTATION_CLASS`` of the test kit's token (registered by ``signpeer_core.testing.plugin``).
MEMORY_TOKEN = "MemoryCryptoToken"


def write_home(home: Path, pki: PKI, settings: str = "") -> Path:
    """A data directory as ``signpeer init`` leaves it (without workers)."""
    from signpeer_core.services import Services
    from signpeer_core.settings import load_settings
    from signpeer_core.storage import Admin, AuditEvent
    from signpeer_core.testing.postgres import database_url_for_test

    enable_test_plugin()
    home.mkdir(parents=True, exist_ok=True)
    url = database_url_for_test() if "database_url" not in settings else None  # SIGNPEER_TEST_DATABASE_URL
    database = f'database_url = "{url}"\n' if url else ""
    (home / "signpeer.toml").write_text(
        '[server]\nhost = "127.0.0.1"\nport = 0\nreload_poll_interval = 0.2\n' + database + settings)
    tls = home / "tls"
    tls.mkdir(exist_ok=True)
    for src, dst in [(pki.server.pem, "server.pem"), (pki.server.key_pem, "server-key.pem"),
                     (pki.ca_pem, "client-ca.pem"), (pki.ca_pem, "ca.pem"),
                     (pki.admin.pem, "admin.pem"), (pki.admin.key_pem, "admin-key.pem")]:
        (tls / dst).write_bytes(Path(src).read_bytes())
        if dst.endswith("key.pem"):
            os.chmod(tls / dst, 0o600)
    services = Services.open(load_settings(home), load=False)
    try:
        rules = serialize_rules([ClientRule.for_certificate(pki.admin.cert)])
        services.store.update_global({"GLOB.WSADMINS": rules},
                                     audit=[AuditEvent("SET_GLOBAL_PROPERTY", "GLOBAL_CONFIG", Admin("tests"))])
    finally:
        services.close()
    return home


def open_store_of(home: Path) -> Any:
    """The store of a data directory, on SQLite or PostgreSQL as its settings say, with its key;
    no plugin tables and no workers loaded (close it). Its ``database`` runs SQL on either."""
    from signpeer_core.settings import load_settings
    from signpeer_core.storage import open_store
    from signpeer_core.storage.protection import KeySource

    settings = load_settings(home)
    return open_store(settings.database, key=KeySource.for_settings(settings), node=settings.node_id)


def open_services(home: Path) -> Any:
    """Services on a data directory (close them, or use the ``services`` fixture)."""
    from signpeer_core.services import Services
    from signpeer_core.settings import load_settings

    enable_test_plugin()
    return Services.open(load_settings(home))


def add_signer(services: Any, pki: PKI, name: str, implementation: str = "PlainSigner",
               keyalg: str = "ECDSA", keyspec: str = "secp256r1", **props: str) -> int:
    """Create a signer with its own :class:`MemoryCryptoToken` (auto-activated with
    ``KEYSTOREPASSWORD`` = :data:`PASSWORD`; remove that property for a token that starts
    inactive), a key ``signer00001`` and a certificate from the development CA; returns the
    worker id. ``props`` override or add properties. Call ``reload`` (or bump the generation)
    for a running server to see it."""
    from signpeer_core.certificates import encode_certificate_property
    from signpeer_core.storage import Admin, AuditEvent

    store, runtime = services.store, services.runtime
    wid = store.next_worker_id()
    base = {"NAME": name, "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": implementation,
            "CRYPTOTOKEN_IMPLEMENTATION_CLASS": MEMORY_TOKEN, "KEYSTOREPASSWORD": PASSWORD,
            "DEFAULTKEY": "signer00001"}
    base.update({k.upper(): v for k, v in props.items()})
    store.update_worker(wid, base, audit=[AuditEvent("SET_WORKER_CONFIG", "WORKER_CONFIG", Admin("tests"), wid)])
    runtime.load()
    token = runtime.get(name).token
    token.generate_key("signer00001", keyalg, keyspec)
    cert = pki.issue_signer(token.public_key("signer00001"), f"CN={name}, O=signpeer tests")
    store.update_worker(wid, {"SIGNERCERTCHAIN": encode_certificate_property([cert, pki.ca_cert])})
    runtime.load()
    return wid

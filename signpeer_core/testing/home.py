"""Data directories for tests: as ``signpeer init`` leaves them, opened Services, signers."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes

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
    loaded = load_settings(home)
    template = _template_key(home, pki, loaded)
    if template is not None and template in _templates:
        _copy_state(_templates[template], home)
        return home
    services = Services.open(loaded, load=False)
    try:
        rules = serialize_rules([ClientRule.for_certificate(pki.admin.cert)])
        services.store.update_global({"GLOB.WSADMINS": rules},
                                     audit=[AuditEvent("SET_GLOBAL_PROPERTY", "GLOBAL_CONFIG", Admin("tests"))])
    finally:
        services.close()
    if template is not None:
        if not any(home.glob("signpeer.db-*")):  # closed whole: no write-ahead log beside it
            saved = Path(tempfile.mkdtemp(prefix="signpeer-home-template-"))
            atexit.register(shutil.rmtree, saved, True)
            _copy_state(home, saved)
            _templates[template] = saved
    return home


def open_store_of(home: Path) -> Any:
    """The store of a data directory, on SQLite or PostgreSQL as its settings say, with its key;
    no plugin tables and no workers loaded (close it). Its ``database`` runs SQL on either."""
    from signpeer_core.settings import load_settings
    from signpeer_core.storage import open_store
    from signpeer_core.storage.protection import KeySource

    settings = load_settings(home)
    return open_store(settings.database, key=KeySource.for_settings(settings), node=settings.node_id)


#: Data directories' state (database, data protection key) as the first :func:`write_home` of this
#: process left it, per PKI and plugin set: later homes copy it instead of migrating a new database.
_templates: dict[tuple[str, ...], Path] = {}
_STATE = ("signpeer.db", "signpeer.key")


def _template_key(home: Path, pki: PKI, settings: Any) -> tuple[str, ...] | None:
    """What a new home's database depends on, when it is the default SQLite database and key file
    beside it (None otherwise: PostgreSQL, a database or key elsewhere, a key from the environment)."""
    from signpeer_core.plugins import DISABLED_ENV, EXTRA_ENV
    from signpeer_core.storage.protection import KeySource

    if settings.database != f"sqlite:///{home / 'signpeer.db'}" or settings.key:
        return None
    if KeySource.for_settings(settings).path != home / "signpeer.key":
        return None
    if any((home / name).exists() for name in _STATE):
        return None  # an existing data directory is updated, not replaced
    return (str(pki.ca_pem), pki.admin.cert.fingerprint(hashes.SHA256()).hex(),
            os.environ.get(DISABLED_ENV, ""), os.environ.get(EXTRA_ENV, ""))


def _copy_state(src: Path, dst: Path) -> None:
    """Copy a closed data directory's database and key (modes kept: the key stays 0600)."""
    for name in _STATE:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)


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

"""``MemoryCryptoToken``: a crypto token for tests that needs no plugin and no device.

Keys live in process memory as ``cryptography`` key objects (EC, RSA and Ed25519, made by
:func:`signpeer_core.keys.generate_software_key`). So that every process on a data directory
sees the same keys, as a test needs when it generates a key in the pytest process and signs
through a ``signpeer serve`` subprocess, the token mirrors them into its worker's keystore row
in the database (``store.keystore``/``put_keystore``): a JSON document with the keys as
*unencrypted* PKCS#8 PEM and a SHA-256 of the password. That is fine for tests and wrong for
anything else, which is why the type is registered only by :mod:`signpeer_core.testing.plugin`
(``SIGNPEER_EXTRA_PLUGINS``), never by an installed entry point.

It behaves like the soft token where tests look: ``KEYSTOREPASSWORD`` activates it at start,
``activatecryptotoken`` with a wrong password fails with "wrong password", new keys get a
SignServer-style placeholder certificate, and a chain can be imported next to a key.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signpeer_core.config import WorkerConfig
from signpeer_core.errors import (
    BadRequestError,
    ConflictError,
    CryptoTokenAuthenticationError,
    CryptoTokenOfflineError,
    KeyNotFoundError,
)
from signpeer_core.keys import (
    PrivateKey,
    SignatureAlgorithm,
    generate_software_key,
    parse_key_spec,
    placeholder_certificate,
)
from signpeer_core.tokens import CryptoToken, PreparedSigner, PropertyDoc, key_map_signer

if TYPE_CHECKING:
    from signpeer_core.services import Services

FORMAT = "signpeer-test-memory-token-1"

#: Properties that decide what the token is; a reload changing none of them keeps the instance
#: (and its activation), as the soft token does.
_TOKEN_PROPERTIES = ("NAME", "CRYPTOTOKEN_IMPLEMENTATION_CLASS", "KEYSTOREPASSWORD")


def _password_digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


class MemoryCryptoToken(CryptoToken):
    """Keys in memory, mirrored unencrypted into the database: for tests only."""

    type_name: ClassVar[str] = "MemoryCryptoToken"
    properties: ClassVar[tuple[PropertyDoc, ...]] = (
        PropertyDoc("KEYSTOREPASSWORD", "—", "when set, the token activates itself with it at start-up; the "
                    "first activation sets the password", secret=True),
    )

    def __init__(self, worker_id: int, config: WorkerConfig, services: Services) -> None:
        super().__init__(worker_id, config, services)
        self._lock = threading.RLock()
        self._active = False
        #: alias -> key and alias -> chain; replaced whole, so lock-free readers see a consistent map.
        self._keys: dict[str, PrivateKey] = {}
        self._chains: dict[str, list[x509.Certificate]] = {}

    # -- the database row --------------------------------------------------------------------
    def _read(self) -> dict[str, Any] | None:
        data = self.services.store.keystore(self.worker_id)
        if data is None:
            return None
        doc: dict[str, Any] = json.loads(data)
        if doc.get("format") != FORMAT:
            raise CryptoTokenOfflineError(f"the keystore of worker {self.worker_id} is not a memory token's")
        return doc

    def _write(self, doc: dict[str, Any]) -> None:
        self.services.store.put_keystore(self.worker_id, json.dumps(doc, sort_keys=True).encode())

    def _load(self, doc: dict[str, Any]) -> None:
        keys: dict[str, PrivateKey] = {}
        chains: dict[str, list[x509.Certificate]] = {}
        for alias, entry in doc["keys"].items():
            keys[alias] = serialization.load_pem_private_key(entry["key"].encode(), None)  # type: ignore[assignment]  # keys it generated itself
            chains[alias] = [x509.load_pem_x509_certificate(pem.encode()) for pem in entry["chain"]]
        self._keys, self._chains = keys, chains

    def _refresh(self) -> None:
        """Pick up keys another process generated or removed."""
        if self._active:
            with self._lock:
                doc = self._read()
                if doc is not None:
                    self._load(doc)

    # -- life cycle --------------------------------------------------------------------------
    def activate(self, authentication_code: str) -> None:
        with self._lock:
            doc = self._read()
            if doc is None:
                if not authentication_code:
                    raise BadRequestError("activate a new memory token with the password that is to protect it")
                doc = {"format": FORMAT, "password": _password_digest(authentication_code), "keys": {}}
                self._write(doc)
            elif doc["password"] != _password_digest(authentication_code):
                raise CryptoTokenAuthenticationError(
                    f"wrong password for the memory token of worker '{self.config.name}'")
            self._load(doc)
            self._active = True

    def auto_activate(self) -> None:
        password = self.config.get("KEYSTOREPASSWORD")
        if password and password.strip():
            self.activate(password)

    def deactivate(self) -> None:
        with self._lock:
            self._active = False
            self._keys, self._chains = {}, {}

    @property
    def is_active(self) -> bool:
        return self._active

    def require_active(self) -> None:
        if not self._active:
            raise CryptoTokenOfflineError(
                f"the crypto token of worker '{self.config.name}' is not activated; "
                f"run signpeer activatecryptotoken {self.config.name} <password>")

    def same_configuration(self, config: WorkerConfig) -> bool:
        if config.worker_id != self.worker_id or any(config.get(k) != self.config.get(k) for k in _TOKEN_PROPERTIES):
            return False
        self.config = config
        self._refresh()
        return True

    # -- keys --------------------------------------------------------------------------------
    def key_aliases(self) -> list[str]:
        self.require_active()
        self._refresh()
        return sorted(self._keys)

    def private_key(self, alias: str) -> PrivateKey:
        key = self._keys.get(alias)
        if key is None:
            self.require_active()
            self._refresh()
            key = self._keys.get(alias)
        if key is None:
            raise KeyNotFoundError(f"worker '{self.config.name}' has no key '{alias}'; generate it with "
                                   f"signpeer generatekey {self.config.name} -alias {alias}")
        return key

    def prepared_signer(self, alias: str, algorithm: SignatureAlgorithm) -> PreparedSigner:
        """``PlainSigner``'s inline hot path, as the soft token's: :func:`key_map_signer` over the key map."""
        return key_map_signer(lambda: self._keys, alias, algorithm)

    def certificate_chain(self, alias: str) -> list[x509.Certificate]:
        if not self._active:
            return []
        self.private_key(alias)
        return list(self._chains.get(alias, []))

    def generate_key(self, alias: str, keyalg: str, keyspec: str) -> None:
        alias = (alias or "").strip()
        if not alias:
            raise BadRequestError("a key alias is required")
        self.require_active()
        key = generate_software_key(parse_key_spec(keyalg, keyspec))
        cert = placeholder_certificate(key, alias)

        def change(keys: dict[str, Any]) -> None:
            if alias.lower() in {a.lower() for a in keys}:
                raise ConflictError(f"worker '{self.config.name}' already has a key '{alias}'")
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            keys[alias] = {"key": pem.decode(), "chain": [cert.public_bytes(serialization.Encoding.PEM).decode()]}

        self._modify(change)

    def remove_key(self, alias: str) -> None:
        self.require_active()

        def change(keys: dict[str, Any]) -> None:
            if keys.pop(alias, None) is None:
                raise KeyNotFoundError(f"worker '{self.config.name}' has no key '{alias}' to remove; list the keys "
                                       f"with signpeer testkey {self.config.name} all")

        self._modify(change)

    def import_certificate_chain(self, alias: str, chain: list[x509.Certificate]) -> None:
        self.require_active()

        def change(keys: dict[str, Any]) -> None:
            if alias not in keys:
                raise KeyNotFoundError(f"worker '{self.config.name}' has no key '{alias}'")
            keys[alias]["chain"] = [c.public_bytes(serialization.Encoding.PEM).decode() for c in chain]

        self._modify(change)

    def _modify(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Read, change and write the database row; memory follows only a successful write.
        (Serialized within a process; tests do not change one token from two processes at once.)"""
        with self._lock:
            doc = self._read()
            if doc is None:
                raise CryptoTokenOfflineError(f"the memory token of worker '{self.config.name}' was never activated")
            change(doc["keys"])
            self._write(doc)
            self._load(doc)

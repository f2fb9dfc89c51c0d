"""The data protection key: a key kept outside the database that encrypts the secrets stored in it
and seals the audit log.

A backup of the database alone must not give away what protects the private keys: the
auto-activation passwords and PINs of crypto tokens (``KEYSTOREPASSWORD``, ``PIN``, every
property :func:`signpeer_core.audit.is_secret_key` names) are stored encrypted with AES-256-GCM
under a key that is NOT in the database (as EJBCA's password encryption key). The same key
(a separate subkey) computes the audit log's HMAC chain (:mod:`.audit`).

Where the key comes from, first found wins:

1. ``SIGNPEER_KEY`` in the environment: the key itself, 32 bytes as 64 hex digits or base64
   (for a secret store or a KMS that hands the key to the process);
2. ``key_file`` in ``signpeer.toml`` (``SIGNPEER_KEY_FILE``);
3. ``signpeer.key`` beside an SQLite database (``<home>/signpeer.key`` for other databases).

A missing key file is created (mode 0600) the first time a database without a key is opened.
The database records a check value of its key (``meta``, ``protection.key_check``): a database
opened with another key, or whose key file has gone, is refused with a message naming the file,
instead of a new key being made that could not read its secrets.

Encrypted values are ``enc:v1:<base64url(nonce | ciphertext | tag)>``; what reads them decides
by the prefix, so values written before encryption existed are read as they are and encrypted
once when the key is set up (:func:`adopt`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.engine import make_url

from signpeer_core.errors import ConfigurationError

if TYPE_CHECKING:
    from signpeer_core.settings import Settings

PREFIX = "enc:v1:"
KEY_FILE = "signpeer.key"
KEY_ENV = "SIGNPEER_KEY"
_AAD = b"signpeer stored secret"


def _subkey(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"signpeer " + purpose).derive(master)


class SecretBox:
    """Encrypts stored secrets and keys the audit log's HMAC; made from the 32-byte master key."""

    def __init__(self, master: bytes, origin: str) -> None:
        if len(master) != 32:
            raise ConfigurationError(f"the data protection key ({origin}) must be 32 bytes, not {len(master)}")
        self.origin = origin
        self._aead = AESGCM(_subkey(master, b"secrets"))
        self.audit_key = _subkey(master, b"audit log")
        self.check = hmac.new(_subkey(master, b"check"), b"signpeer key check", hashlib.sha256).hexdigest()[:32]
        self._derived = _subkey(master, b"derived")

    def subkey(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` (e.g. ``"adminweb csrf"``), the same in every process of
        every node that has this data protection key, and useless for anything else."""
        return _subkey(self._derived, purpose.encode())

    def seal(self, text: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, text.encode(), _AAD)
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, value: str) -> str:
        """The plain text of a stored value (values without the prefix are plain already)."""
        if not value.startswith(PREFIX):
            return value
        try:
            raw = base64.urlsafe_b64decode(value[len(PREFIX):])
            return self._aead.decrypt(raw[:12], raw[12:], _AAD).decode()
        except (InvalidTag, ValueError, binascii.Error):
            raise ConfigurationError(
                f"a stored secret cannot be decrypted with the data protection key ({self.origin}): it was "
                "damaged, or the database and the key file do not belong together; restore both from the "
                "same backup") from None


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


class MissingKeyError(ConfigurationError):
    """The database has a data protection key, and this process was not given it."""


@dataclass(frozen=True)
class KeySource:
    """Where a process finds the data protection key (see the module docstring)."""

    database_url: str
    key_file: str = ""
    #: The key itself; by default ``SIGNPEER_KEY`` from the environment (settings pass theirs).
    key: str = field(default_factory=lambda: os.environ.get(KEY_ENV, ""))
    home: Path | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> KeySource:
        return cls(settings.database, settings.key_file, settings.key, settings.home)

    @property
    def path(self) -> Path:
        if self.key_file:
            p = Path(self.key_file).expanduser()
            return p if p.is_absolute() or self.home is None else self.home / p
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite" and url.database:
            return Path(url.database).expanduser().absolute().parent / KEY_FILE
        if self.home is None:
            raise ConfigurationError("no data protection key for this database: set key_file in signpeer.toml "
                                     f"or {KEY_ENV}")
        return self.home / KEY_FILE

    def load(self, stored_check: str | None) -> SecretBox:
        """The key; ``stored_check`` is the database's record of its key (None: it has none yet)."""
        if self.key:
            return SecretBox(_decode(self.key, KEY_ENV), KEY_ENV)
        path = self.path
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            if stored_check is not None:
                if make_url(self.database_url).get_backend_name() != "sqlite":
                    raise MissingKeyError(
                        f"the data protection key file {path} is missing, and the database's stored secrets need "
                        f"it: every node of a cluster uses the key of the node that set the database up; copy "
                        f"that node's signpeer.key here (mode 0600) or set {KEY_ENV} (docs/cluster.md)") from None
                raise MissingKeyError(
                    f"the data protection key file {path} is missing, and the database's stored secrets need it: "
                    f"restore it from the backup made with this database (or set {KEY_ENV})") from None
            return SecretBox(_create(path), str(path))
        except OSError as exc:
            raise ConfigurationError(f"cannot read the data protection key file {path}: {exc.strerror}; "
                                     "run signpeer as the user that owns the data directory") from None
        return SecretBox(_decode(text, str(path)), str(path))


def _decode(text: str, origin: str) -> bytes:
    text = text.strip()
    try:
        return bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise ConfigurationError(f"the data protection key ({origin}) must be 32 bytes as 64 hex digits "
                                 "or base64") from None


def _create(path: Path) -> bytes:
    """A new key in a new 0600 file, written whole before it appears under its name (a hard link):
    a process that loses the race reads the winner's key."""
    key = os.urandom(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _decode(path.read_text(), str(path))
    except OSError as exc:
        raise ConfigurationError(f"cannot create the data protection key file {path}: {exc.strerror}; "
                                 f"make its directory writable, or set key_file or {KEY_ENV}") from None
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass
    return key

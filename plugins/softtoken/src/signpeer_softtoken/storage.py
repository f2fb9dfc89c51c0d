"""Where a soft token's keystore bytes live: a PKCS#12 file or a row in the database (INTERNAL).

Both backends give the bytes with a stamp (a change shows as another stamp), write atomically,
and serialize the processes of a machine on a lock file (``flock``).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from signpeer_core.api import ConfigurationError

if TYPE_CHECKING:
    from signpeer_core.api import Services

log = logging.getLogger("signpeer.softtoken")


class Backend(Protocol):
    """Where the keystore bytes live."""

    #: True when :meth:`stamp` is cheap enough to call when a key is missing (no database).
    cheap_stamp: bool

    created_on_activation: bool

    def describe(self) -> str: ...
    def stamp(self) -> object: ...
    def read(self) -> tuple[object, bytes | None]:
        """The keystore's bytes (None: there is none yet) and their stamp, taken before them (a
        change between the two shows as a changed stamp next time)."""
        ...
    def write(self, data: bytes) -> object:
        """Store ``data``; its stamp."""
        ...
    def locked(self) -> AbstractContextManager[None]: ...


@contextmanager
def flock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock shared by every process (CLI and server) on this machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers and crashes see the old or the new file, never
    a mix: write a temporary file in the same directory, fsync it, rename it over the old one and
    fsync the directory (so the rename itself survives a power loss)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        mode = path.stat().st_mode & 0o777  # keep permissions an administrator chose
    except FileNotFoundError:
        mode = 0o600
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class FileBackend:
    cheap_stamp = True
    #: A configured file that is not there is an error (a wrong KEYSTOREPATH, a forgotten
    #: mount), never silently replaced by an empty keystore; it is created only when asked.
    created_on_activation = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")

    def describe(self) -> str:
        return f"keystore file {self.path}"

    def stamp(self) -> object:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def read(self) -> tuple[object, bytes | None]:
        stamp = self.stamp()
        try:
            return stamp, self.path.read_bytes()
        except FileNotFoundError:
            return stamp, None
        except OSError as exc:
            raise ConfigurationError(f"cannot read {self.describe()}: {exc.strerror}") from exc

    def write(self, data: bytes) -> object:
        atomic_write(self.path, data)
        return self.stamp()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """The keystore's lock. Every write happens under it, so a temporary file of
        :func:`atomic_write` found while holding it was left by a process that died mid-write
        (kill -9, power loss): it is removed (the keystore itself is the old or the new file)."""
        with flock(self.lock_path):
            self._remove_stale_temporaries()
            yield

    def _remove_stale_temporaries(self) -> None:
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            try:
                stale.unlink()
                log.warning("removed %s, left by a write of %s that did not finish", stale, self.path)
            except OSError as exc:
                log.warning("cannot remove %s, left by an unfinished write: %s", stale, exc.strerror)


class DatabaseBackend:
    cheap_stamp = False  # signing requests never touch the database
    created_on_activation = True  # a new worker's INTERNAL keystore: its row is made on first activation

    def __init__(self, services: Services, worker_id: int) -> None:
        self.store = services.store
        self.worker_id = worker_id
        # The store has no compare-and-swap, so processes of this node serialize on a lock file.
        self.lock_path = services.settings.path(f"keystores/worker{worker_id}-internal.lock")

    def describe(self) -> str:
        return f"INTERNAL keystore of worker {self.worker_id} (in the database)"

    # The stamp is the digest of the bytes, so one read gives both (the row is the stamp: a
    # separate, cheaper stamp would still cost a statement, which is most of a read's price).
    def stamp(self) -> object:
        return self.read()[0]

    def read(self) -> tuple[object, bytes | None]:
        data = self.store.keystore(self.worker_id)
        return (None if data is None else hashlib.sha256(data).digest()), data

    def write(self, data: bytes) -> object:
        self.store.put_keystore(self.worker_id, data)
        return hashlib.sha256(data).digest()

    def locked(self) -> AbstractContextManager[None]:
        return flock(self.lock_path)

"""Named locks across the processes of one machine, for an SQLite database (:meth:`Database.lock`).

Every name is a 64-bit key, as PostgreSQL's advisory locks take it
(:func:`~signpeer_core.storage.engine.lock_key`); on SQLite the key is one byte of ONE lock file,
``<database>.locks/named.lock``, locked with an open-file-description lock (``F_OFD_SETLKW``,
Linux): each :func:`named_lock` opens the file for itself, so two threads of one process exclude
each other as two processes do, and closing the descriptor releases the lock (a process that dies
releases its locks with it).

One file for every name, made once: a lock per worker (``worker-<id>``,
``keystore.worker<id>``) no longer creates a file per worker on first use. A file system's inode
allocation is a kernel cost in CPU and a journal write in wall time (on the test machine about
0.5–1.3 ms per new file), paid twice by each worker's first renewal, and the directory no longer
grows with the number of workers.

Where the platform has no OFD locks, each name has its own file, locked with ``flock`` (what
signpeer did before).
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from signpeer_core.errors import DatabaseUnavailableError
from signpeer_core.storage.engine import lock_key

#: The lock file shared by every name (inside ``<database>.locks``).
SHARED_FILE = "named.lock"

_OFD_SETLKW: int | None = getattr(fcntl, "F_OFD_SETLKW", None)


def lock_offset(name: str) -> int:
    """The byte of the shared lock file that stands for ``name``: PostgreSQL's advisory lock key
    of the name, made a non-negative ``off_t``."""
    return lock_key(name) % (1 << 62)


def _flock_struct(lock_type: int, offset: int) -> bytes:
    # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks); native alignment.
    return struct.pack("hhqqi", lock_type, os.SEEK_SET, offset, 1, 0)


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


@contextmanager
def named_lock(database_file: str, name: str) -> Iterator[None]:
    """Hold the lock ``name`` of the SQLite database ``database_file`` (blocks until it is free)."""
    directory = Path(database_file + ".locks")
    if _OFD_SETLKW is not None:
        path = directory / SHARED_FILE
    else:
        path = directory / ("".join(c if c.isalnum() or c in "-_." else "_" for c in name) + ".lock")
    try:
        fd = _open(path)
    except OSError as exc:
        raise DatabaseUnavailableError(
            f"data directory not writable: cannot create the lock file {path} ({exc.strerror}); "
            f"make the database's directory writable by the user signpeer runs as") from None
    try:
        if _OFD_SETLKW is not None:
            fcntl.fcntl(fd, _OFD_SETLKW, _flock_struct(fcntl.F_WRLCK, lock_offset(name)))
        else:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock

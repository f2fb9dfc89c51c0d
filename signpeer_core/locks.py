"""Locks between the processes of one data directory (server processes, CLI commands).

:func:`worker_lock` serializes an operation on one worker across every process that shares the
data directory: an exclusive ``flock`` on ``<home>/run/locks/worker-<id>.lock``. Within a process
it also serializes threads (``flock`` is per open file, and each call opens its own). Processes of
other machines sharing a database do not see it; operations that must also be safe there re-check
what they find after taking it (see :meth:`signpeer_core.administration.keys.Keys.next_key`).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def lock_path(home: Path, worker_id: int) -> Path:
    return home / "run" / "locks" / f"worker-{worker_id}.lock"


@contextmanager
def worker_lock(home: Path, worker_id: int) -> Iterator[None]:
    """Hold the data directory's lock on one worker (blocks until the holder lets go). A data
    directory that cannot be written (read-only) gives no lock: there is nothing to change there."""
    path = lock_path(home, worker_id)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock

"""``Database.lock`` on SQLite: one lock file, a byte per name (signpeer_core.storage.filelocks).

What must hold: a name is held by one thread of one process at a time; other names are free
meanwhile; a process that dies releases its locks; and taking locks for many names (one per
worker) creates one file, not one per name.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from signpeer_core.storage import filelocks
from signpeer_core.storage.database import Database
from signpeer_core.testing import wait_until

pytestmark = pytest.mark.skipif(not hasattr(fcntl, "F_OFD_GETLK"), reason="open-file-description locks are Linux's")


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'signpeer.db'}")
    yield db
    db.close()


def held_elsewhere(db: Database, name: str) -> bool:
    """Whether another open file description holds ``name``, as any other process would see it."""
    path = Path(str(db.engine.url.database) + ".locks") / filelocks.SHARED_FILE
    fd = os.open(path, os.O_RDWR)
    try:
        probe = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, filelocks.lock_offset(name), 1, 0)
        answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, probe)
        return struct.unpack("hhqqi", answer[:struct.calcsize("hhqqi")])[0] != fcntl.F_UNLCK
    finally:
        os.close(fd)


def test_threads_of_one_process_take_a_name_one_at_a_time(database: Database) -> None:
    inside: list[str] = []
    overlaps: list[tuple[str, ...]] = []

    def work(me: str) -> None:
        for _ in range(20):
            with database.lock("worker-7"):
                inside.append(me)
                if len(inside) > 1:
                    overlaps.append(tuple(inside))
                time.sleep(0.001)  # widens the window another holder would show up in
                inside.remove(me)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlaps


def test_a_held_name_is_seen_held_and_other_names_stay_free(database: Database) -> None:
    with database.lock("worker-1"):
        assert held_elsewhere(database, "worker-1")
        assert not held_elsewhere(database, "worker-2")
        with database.lock("keystore.worker1"):  # nested, as a renewal takes them
            assert held_elsewhere(database, "keystore.worker1")
        assert not held_elsewhere(database, "keystore.worker1")
    assert not held_elsewhere(database, "worker-1")


def test_a_process_that_dies_releases_its_lock(database: Database) -> None:
    url = str(database.engine.url)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\nfrom signpeer_core.storage.database import Database\n"
         f"db = Database({url!r})\n"
         "with db.lock('worker-3'):\n    print('held', flush=True)\n    sys.stdin.readline()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert held_elsewhere(database, "worker-3")
        taken = threading.Event()

        def take() -> None:
            with database.lock("worker-3"):
                taken.set()

        waiter = threading.Thread(target=take)
        waiter.start()
        with database.lock("worker-4"):  # another name: free at once
            pass
        assert not taken.is_set()  # the child still holds worker-3
        holder.kill()
        holder.wait()
        wait_until(taken.is_set, timeout=30, what="the lock of the killed process to be released")
        waiter.join()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_many_names_make_one_lock_file(database: Database) -> None:
    for wid in range(50):
        with database.lock(f"worker-{wid}"), database.lock(f"keystore.worker{wid}"):
            pass
    directory = Path(str(database.engine.url.database) + ".locks")
    assert [p.name for p in directory.iterdir()] == [filelocks.SHARED_FILE]
    assert oct(directory.stat().st_mode & 0o777) == oct(0o700)
    assert oct((directory / filelocks.SHARED_FILE).stat().st_mode & 0o777) == oct(0o600)

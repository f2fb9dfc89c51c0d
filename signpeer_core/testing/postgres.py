"""A real PostgreSQL server for tests: ``initdb`` and ``pg_ctl`` into a temporary directory.

Debian's ``postgresql`` package puts the programs in ``/usr/lib/postgresql/<version>/bin``
(``SIGNPEER_TEST_PG_BIN`` overrides). ``initdb`` refuses to run as root, so when the tests run as
root (CI) the cluster belongs to ``nobody`` (``runuser``); its directory is outside the pytest
temporary tree, whose parents ``nobody`` may not enter. The server listens on 127.0.0.1 on a
free port, without Unix sockets, with ``trust`` authentication for the ``signpeer`` user.

* :class:`PostgresServer` -- ``start()``, ``stop()``, ``restart()``, ``kill()``, ``url(db)``,
  ``create_database(name)``; ``fresh_url()`` gives a new, empty database on it.
* :func:`base_url` -- what ``SIGNPEER_TEST_DATABASE_URL`` asks for: unset (SQLite), a server URL
  (``postgresql://user@host:port/db``), or ``start`` (a server of this test session);
  :func:`on_postgresql` -- whether it is set.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

#: The environment variable that runs the tests' data directories on PostgreSQL.
TEST_DATABASE_ENV = "SIGNPEER_TEST_DATABASE_URL"
USER = "signpeer"


def pg_bin() -> Path | None:
    """The directory of ``initdb``/``pg_ctl``, or None when PostgreSQL is not installed."""
    configured = os.environ.get("SIGNPEER_TEST_PG_BIN")
    candidates = [configured] if configured else sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, owned by an unprivileged user when run as root."""

    _counter = itertools.count(1)

    def __init__(self, bin_dir: Path | None = None) -> None:
        found = bin_dir or pg_bin()
        if found is None:
            raise RuntimeError("PostgreSQL is not installed (initdb/pg_ctl); run scripts/system-deps.sh")
        self.bin = found
        self.root = Path(tempfile.mkdtemp(prefix="signpeer-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.host = "127.0.0.1"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "nobody")
            os.chmod(self.root, 0o700)
            self._as_user = ["runuser", "-u", "nobody", "--"]

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._as_user, *args], capture_output=True, text=True, timeout=timeout,
                              cwd=self.root, check=False)

    def _check(self, proc: subprocess.CompletedProcess[str], what: str) -> None:
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stdout}{proc.stderr}\n{log}")

    def start(self) -> PostgresServer:
        if not self.data.exists():
            self._check(self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust",
                                  "-E", "UTF8", "--no-sync", "--locale=C"), "initdb")
        options = (f"-p {self.port} -c listen_addresses={self.host} -c unix_socket_directories='' "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._check(self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log),
                              "-w", "-t", "60", "start", timeout=90), "pg_ctl start")
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", timeout=90)

    def restart(self) -> None:
        """Stop (fast: connections are cut) and start again on the same port."""
        self.stop("fast")
        self.start()

    def kill(self) -> None:
        """Stop at once, as a crash would (``immediate``): no shutdown checkpoint."""
        self.stop("immediate")

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL."""
        create_database(self.url(), name)
        return self.url(name)

    def fresh_url(self) -> str:
        return self.create_database(f"t{next(self._counter)}_{uuid.uuid4().hex[:8]}")


def create_database(server_url: str, name: str) -> None:
    """``CREATE DATABASE name`` on the server of ``server_url`` (a name of letters, digits and _)."""
    import psycopg

    if not name.replace("_", "").isalnum():
        raise ValueError(f"database name '{name}' must be letters, digits and _")
    conninfo = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def on_postgresql() -> bool:
    """Whether this test run puts the data directories of ``home``/``write_home`` on PostgreSQL
    (``SIGNPEER_TEST_DATABASE_URL``); tests about SQLite's own files skip then, naming why."""
    return bool(os.environ.get(TEST_DATABASE_ENV))


def database_url_for_test() -> str | None:
    """A new, empty schema on the database ``SIGNPEER_TEST_DATABASE_URL`` names, as a URL whose
    connections use it (``search_path``); None when the variable is unset (SQLite).

    A schema, not a database, per data directory: a PostgreSQL database costs megabytes and a
    copy of ``template1``, a schema almost nothing, and the suite makes hundreds of them.
    """
    import psycopg

    server = os.environ.get(TEST_DATABASE_ENV, "")
    if not server:
        return None
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    separator = "&" if "?" in server else "?"
    return f"{server}{separator}options=-csearch_path%3D{name}"


def accepting(url: str) -> bool:
    """Whether the server of ``url`` accepts connections now (for ``wait_until``)."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False

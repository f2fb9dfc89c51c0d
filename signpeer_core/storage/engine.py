"""The engine of a database URL, and what its driver's errors mean.

:func:`create_engine` is the only place that knows which database a URL names: SQLite (WAL,
``synchronous=NORMAL``, a 30 s busy timeout, foreign keys on, pysqlite's own transaction handling
off; the file made 0600 before SQLite opens it) or PostgreSQL through psycopg 3 and SQLAlchemy's
pool (a connection that rested more than :data:`PING_AFTER_IDLE_S` is checked when handed out).
:func:`describe_database_error` and the ``*_connection_*`` predicates turn driver errors into what
the user is told. The transactions on the engine are :class:`~.database.Database`'s.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any, NoReturn, cast

import sqlalchemy
from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, OperationalError

from signpeer_core.errors import ConfigurationError, DatabaseUnavailableError

BUSY_TIMEOUT_S = 30
#: Seconds to wait for a PostgreSQL connection to open (a firewalled host must not hang a command).
CONNECT_TIMEOUT_S = 5
#: PostgreSQL connections a process keeps open (and how many more it may open when busy).
POOL_SIZE = 5
POOL_OVERFLOW = 10
#: Seconds a pooled PostgreSQL connection may rest before it is checked when handed out again.
PING_AFTER_IDLE_S = 1.0
_URL_HINT = ("sqlite:///<path> or postgresql://user:password@host:port/database (database_url in signpeer.toml, "
             "SIGNPEER_DATABASE_URL or --database-url)")



log = logging.getLogger("signpeer.storage")

#: The SQLite files of one database: the database and, in WAL mode, its log and shared-memory index.
SQLITE_SUFFIXES = ("", "-wal", "-shm")


def _unsupported(url: str) -> ConfigurationError:
    return ConfigurationError(f"unsupported database URL '{hide_password(url)}'; use {_URL_HINT}")


def hide_password(url: str) -> str:
    """A database URL as messages show it: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@", 1)[-1] if "@" in url else url


def postgresql_url(url: str | URL) -> URL:
    """A ``postgresql://`` URL as SQLAlchemy's psycopg 3 driver takes it."""
    parsed = make_url(url) if isinstance(url, str) else url
    return parsed.set(drivername="postgresql+psycopg")


def create_engine(url: str) -> Engine:
    """The engine for a database URL (``sqlite:///<path>`` or ``postgresql://...``)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise _unsupported(url) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigurationError(f"database URL '{url}' names no file; use sqlite:///<path>")
        path = Path(parsed.database)
        make_private_database_file(path)
        if path.exists() and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
            # Nobody can write it (nor make its -wal/-shm files): opened read-only and immutable, so
            # reads work; a write is refused as "data directory not writable".
            log.warning("the database %s or its directory is not writable: opened read-only", path)
            parsed = parsed.set(database=f"file:{path}?mode=ro&immutable=1", query={"uri": "true"})
        engine = sqlalchemy.create_engine(
            parsed, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})
        # A pool event (on new connections only): engine-level events would put every statement
        # through SQLAlchemy's slower, event-dispatching execution path.
        event.listen(engine, "connect", _sqlite_connect)
        return engine
    if backend in ("postgresql", "postgres"):
        if parsed.get_driver_name() not in ("psycopg", "postgresql", "postgres", ""):
            raise ConfigurationError(f"database URL '{hide_password(url)}' names driver '{parsed.get_driver_name()}'; "
                                     f"signpeer uses psycopg 3: write postgresql://...")
        if not parsed.database:
            raise ConfigurationError(f"database URL '{hide_password(url)}' names no database; use {_URL_HINT}")
        engine = sqlalchemy.create_engine(
            postgresql_url(parsed.set(drivername="postgresql")), pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW,
            pool_timeout=30,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "signpeer"})
        _ping_rested_connections(engine)
        pool_logger = getattr(engine.pool, "logger", None)
        if isinstance(pool_logger, logging.Logger) and not any(isinstance(f, _LostOnReturn)
                                                               for f in pool_logger.filters):
            pool_logger.addFilter(_LostOnReturn())
        return engine
    raise _unsupported(url)


_RESTED_SINCE = "signpeer.checked_in"


def _ping_rested_connections(engine: Engine) -> None:
    """Check a pooled connection when it is handed out only if it rested for a while (see the module
    doc): SQLAlchemy's documented "pessimistic" check, not paid by a connection in steady use."""
    dialect = engine.dialect

    def checkin(dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_RESTED_SINCE] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get(_RESTED_SINCE)
        if since is None or time.monotonic() - since <= PING_AFTER_IDLE_S:
            return  # new (it just connected), or in steady use
        try:
            dbapi_connection.autocommit = True  # one round trip, and no transaction left open
            try:
                alive = dialect.do_ping(dbapi_connection)
            finally:
                dbapi_connection.autocommit = False
        except Exception as exc:
            if not dialect.is_disconnect(cast(Any, exc), dbapi_connection, None) and not _driver_connection_error(exc):
                raise
            alive = False
        if not alive:
            # The pool replaces this connection (and, the server having gone, the others too).
            raise DisconnectionError("the pooled connection was closed by the server")

    event.listen(engine, "checkin", checkin)
    event.listen(engine, "checkout", checkout)


def make_private_database_file(path: Path) -> None:
    """Create the SQLite file 0600 (in a directory made 0700) before SQLite opens it, wherever it is.

    SQLite gives its ``-wal`` and ``-shm`` files the database file's mode, so these are 0600 too.
    A database left readable by others (made by an older signpeer, or copied) is made 0600, with
    its ``-wal``/``-shm``, and a warning says so: it holds keystores and token passwords.
    """
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError:
        return  # an unwritable directory: SQLite's own open reports it (see errors in store.py)
    else:
        os.close(fd)
        return
    for suffix in SQLITE_SUFFIXES:
        file = Path(f"{path}{suffix}")
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
        except OSError:
            continue
        if not mode & (stat.S_IRWXG | stat.S_IRWXO):
            continue
        private = mode & ~(stat.S_IRWXG | stat.S_IRWXO)
        try:
            os.chmod(file, private)
            log.warning("%s was open to other users (mode %o); it is now %o", file, mode, private)
        except OSError as exc:  # not ours to change: say so, and go on
            log.warning("%s is open to other users (mode %o) and cannot be made private: %s", file, mode, exc)


class _LostOnReturn(logging.Filter):
    """SQLAlchemy's pool logs a traceback when the rollback of a returned connection fails because
    the server went away (PostgreSQL restarted): expected, and the connection is discarded."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Exception during reset") and record.exc_info:
            exc = record.exc_info[1]
            if exc is not None and _driver_connection_error(exc):
                record.msg, record.args, record.exc_info = (
                    "a pooled database connection was lost (%s); it is discarded", (str(exc).splitlines()[0],), None)
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def lock_key(name: str) -> int:
    """The 64-bit PostgreSQL advisory lock key of a lock name (signed, as PostgreSQL takes it)."""
    return int.from_bytes(hashlib.sha256(f"signpeer:{name}".encode()).digest()[:8], "big", signed=True)


def _sqlite_connect(dbapi_connection: sqlite3.Connection, connection_record: Any) -> None:
    # No implicit BEGIN from pysqlite: Database.transaction() and read() decide (see the module doc).
    dbapi_connection.isolation_level = None
    _use_wal(dbapi_connection)
    for pragma in ("synchronous=NORMAL", f"busy_timeout={BUSY_TIMEOUT_S * 1000}", "foreign_keys=ON"):
        dbapi_connection.execute(f"PRAGMA {pragma}")


#: Seconds between two tries of switching a fresh SQLite file to WAL (see :func:`_use_wal`).
WAL_RETRY_S = 0.005


def _use_wal(dbapi_connection: sqlite3.Connection) -> None:
    """Put the database in WAL mode, retrying while another connection is doing the same.

    On a file still in rollback mode (a fresh database), the switch takes a shared lock and then an
    exclusive one. When two processes switch at once, both hold the shared lock and SQLite answers
    one of them "database is locked" at once, without calling the busy handler (waiting could only
    deadlock). That one's lock is released with the failed statement, so the other's switch goes
    through; trying again finds the file in WAL mode. Bounded by the busy timeout, as any lock is.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() >= deadline:
                raise
        time.sleep(WAL_RETRY_S)


#: Driver messages (lower case) → what the user is told; the first match wins.
_PROBLEMS = (
    (("readonly", "read-only", "unable to open database file", "permission denied"),
     "data directory not writable: {db} (or its directory) cannot be written by user {user}; make both "
     "writable by the user signpeer runs as (read-only commands work on a read-only database)"),
    (("not a database", "malformed", "file is encrypted", "corrupt"),
     "the database {db} is damaged ({error}); stop signpeer and restore the database and its key file "
     "from the same backup (docs/security.md)"),
    (("disk is full", "database or disk is full", "disk i/o error"),
     "cannot write the database {db} ({error}); free disk space or check the disk, then retry"),
)


def describe_database_error(exc: BaseException, description: str) -> DatabaseUnavailableError | None:
    """The user's message for a driver error that is about the database file itself, else None."""
    import getpass

    text = str(getattr(exc, "orig", None) or exc).strip()
    lowered = text.lower()
    for needles, message in _PROBLEMS:
        if any(n in lowered for n in needles):
            try:
                user = getpass.getuser()
            except Exception:  # no passwd entry in some containers
                user = str(os.getuid())
            return DatabaseUnavailableError(message.format(db=description, user=user, error=text))
    return None



def _driver_connection_error(exc: BaseException) -> bool:
    """Whether a psycopg error (raised past SQLAlchemy) means the connection failed."""
    if not type(exc).__module__.startswith("psycopg"):
        return False
    import psycopg

    if isinstance(exc, psycopg.InterfaceError):
        return True
    return isinstance(exc, psycopg.OperationalError) and _sqlstate_is_connection(getattr(exc, "sqlstate", None))


def raise_as_sqlalchemy_error(conn: Connection, sql: str, parameters: Any, exc: Exception,
                              many: bool = False) -> NoReturn:
    """Raise ``exc``, an error of a statement run on ``conn``'s DBAPI cursor, as
    :meth:`Connection.execute` would have raised it: a driver's error as SQLAlchemy's class for
    it (its ``orig`` the driver's), except psycopg's lost connections (left for
    :func:`_invalidated_on_loss` and :meth:`Database._reachable`); anything else unchanged."""
    dbapi_error = conn.dialect.loaded_dbapi.Error
    if not isinstance(exc, dbapi_error) or _driver_connection_error(exc):
        raise exc
    raise DBAPIError.instance(sql, parameters, exc, dbapi_error, hide_parameters=conn.engine.hide_parameters,
                              dialect=conn.dialect, ismulti=many) from exc


def _connection_problem(exc: OperationalError) -> bool:
    """Whether a driver's OperationalError means the connection (not the statement) failed."""
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    module = type(orig).__module__ if orig is not None else ""
    if not module.startswith("psycopg"):
        return False  # SQLite: "no such table", "database is locked" are the statement's
    return _sqlstate_is_connection(getattr(orig, "sqlstate", None))


def _sqlstate_is_connection(sqlstate: str | None) -> bool:
    sqlstate = sqlstate or ""
    # Class 08: connection exception; 57P0x: the server shuts down; 28: authorization (password);
    # 3D000: no such database; no SQLSTATE at all: the connection never opened.
    return not sqlstate or sqlstate.startswith(("08", "57P", "28")) or sqlstate == "3D000"

"""The database: one SQLAlchemy engine per process, made from a database URL, and its transactions.

``sqlite:///<path>`` (the default, ``signpeer.db`` in the data directory) or
``postgresql://user:password@host:port/database`` (psycopg 3, SQLAlchemy's connection pool; the
database several nodes share, see docs/cluster.md): the same statements run on both, and
:func:`create_engine` is the only place that knows which database it is. Every statement of signpeer and of its plugins is
written with SQLAlchemy Core (``Table`` metadata, no ORM); the few dialect-specific statements
(an upsert) go through :meth:`Database.upsert`. The few reads on hot paths are compiled once and
run on the driver's cursor (:meth:`Database.prepare`).

SQLite is set up on every connection as signpeer always has: WAL, ``synchronous=NORMAL``, a 30 s
busy timeout (several processes share the file) and foreign keys on. pysqlite's own transaction
handling is switched off, so that :meth:`Database.transaction` can say ``BEGIN IMMEDIATE``: a
write transaction takes the write lock when it starts, and two writers queue on the busy timeout
instead of one failing when it upgrades a read lock. :meth:`Database.read` runs each statement on
its own (SQLite's autocommit), so reads never hold a lock between statements. A process uses one
SQLite connection under a lock (see :class:`Database`).

On PostgreSQL every process takes connections from a pool. A connection that rested in the pool
for more than :data:`PING_AFTER_IDLE_S` is checked before it is handed out (one round trip, and
a dead one is replaced), so a server whose database restarted while it was quiet reconnects by
itself; a connection in steady use is not (the check would be a third of a short statement's
time). A connection that turns out dead anyway makes the pool throw away every connection it
holds (they all went with the server), and its statement fails with a
:class:`DatabaseUnavailableError` (503, "is PostgreSQL running?"), never a driver traceback; a
fixed read (:mod:`.prepared`) is retried once on a new connection. Reads (:meth:`Database.read`)
and single statements (:meth:`Database.write`) run in autocommit: one round trip each, no
``BEGIN``/``ROLLBACK`` around them.

Processes sharing the database tell each other about changes with :meth:`Database.notify` and
:meth:`Database.listen` (``NOTIFY``/``LISTEN`` on PostgreSQL, loopback datagrams on SQLite; see
:mod:`.notifications`), and serialize work across nodes with :meth:`Database.lock` (an advisory
lock on PostgreSQL, a lock file beside the database on SQLite).

Effects that must wait until a write is committed (log lines, SQLite's wake-ups) are registered
on the transaction's connection with :func:`~.aftercommit.after_commit` (:mod:`.aftercommit`).

This object is public for plugins: ``services.store.database`` gives ``transaction()``,
``write()``, ``read()``, ``upsert()``, ``notify()``, ``listen()`` and ``lock()``; a plugin keeps its own ``Table`` metadata and migrations
(:class:`signpeer_core.storage.migrations.MigrationSource`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

import sqlalchemy
from sqlalchemy import Connection, CursorResult, Engine, Executable, Row, Table, event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import Insert

from signpeer_core.errors import ConfigurationError, DatabaseUnavailableError
from signpeer_core.metrics import counter
from signpeer_core.storage import aftercommit
from signpeer_core.storage.aftercommit import after_commit
from signpeer_core.storage.notifications import (
    PG_CHANNEL,
    Callback,
    Notifier,
    PostgresListener,
    WakeDirectory,
    encode,
)
from signpeer_core.storage.prepared import PreparedRead

T = TypeVar("T")

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


_errors = counter("signpeer_database_errors", "Database statements that failed, by kind (read, write)",
                  ("operation",))


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
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", f"busy_timeout={BUSY_TIMEOUT_S * 1000}",
                   "foreign_keys=ON"):
        dbapi_connection.execute(f"PRAGMA {pragma}")


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


class Database:
    """The engine of one database URL, with signpeer's transaction discipline."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        # SQLite: one connection per process, used under a lock (as signpeer always did). SQLite
        # has one writer at a time anyway, its statements take microseconds, and a connection
        # checked out of the pool for every call would cost more than the statement; writers of
        # other processes queue on the busy timeout. Other databases use the pool.
        self._shared = self.dialect == "sqlite"
        # PostgreSQL: the same pool, connections in autocommit (reads and single statements).
        self._autocommit = self.engine if self._shared else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._lock = threading.RLock()
        self._conn: Connection | None = None
        self._writing = False
        self._memo: dict[str, Any] = {}
        self._notifier: Notifier | None = None
        self._wake: WakeDirectory | None = None

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @property
    def description(self) -> str:
        """How messages name the database: the file for SQLite, the URL without password otherwise."""
        if self.dialect == "sqlite":
            return str(make_url(self.url).database)
        return self.engine.url.set(drivername=self.dialect).render_as_string(hide_password=True)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction, all or nothing: committed when the block ends, rolled back on an error.

        On SQLite it takes the write lock at once (``BEGIN IMMEDIATE``). Not re-entrant: a
        transaction does not open another one.
        """
        try:
            if not self._shared:
                with self._reachable(), self.engine.begin() as conn, _invalidated_on_loss(conn):
                    aftercommit.discard(conn)
                    yield conn
                    actions = aftercommit.take(conn)  # the block succeeded: the commit follows
            else:
                with self._locked_transaction() as conn:
                    aftercommit.discard(conn)
                    yield conn
                    actions = aftercommit.take(conn)
        except (DBAPIError, sqlite3.Error) as exc:
            _errors.labels("write").inc()
            self._raise_translated(exc)
        # Committed, and the connection (SQLite: the write lock) given back: see .aftercommit.
        aftercommit.run(actions)

    @contextmanager
    def _locked_transaction(self) -> Iterator[Connection]:
        with self._lock:
            if self._writing:
                raise RuntimeError("a database transaction is already open in this thread")
            conn = self._connection()
            if conn.in_transaction():  # begun by SQLAlchemy for reads: nothing to undo
                conn.rollback()
            with conn.begin():
                # SQLAlchemy's begin is a no-op for pysqlite in autocommit mode: this starts the
                # transaction and takes SQLite's write lock.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                self._writing = True
                try:
                    yield conn
                finally:
                    self._writing = False

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads, each statement on its own (autocommit: on PostgreSQL one round
        trip, no ``BEGIN``/``ROLLBACK`` around it). On SQLite, inside a transaction of the same
        thread, the transaction's connection (it sees its own writes)."""
        try:
            if not self._shared:
                with self._reachable(), self._autocommit.connect() as conn, _invalidated_on_loss(conn):
                    yield conn
                return
            with self._lock:
                # SQLAlchemy begins a transaction of its own on the first statement; in SQLite's
                # autocommit mode it holds nothing, so it stays open until the next write
                # transaction ends it (saving a rollback per read).
                yield self._connection()
        except (DBAPIError, sqlite3.Error) as exc:
            _errors.labels("read").inc()
            self._raise_translated(exc)

    def write(self, statement: Executable, parameters: Any = None) -> Written:
        """One write statement as a transaction of its own: its ``RETURNING`` rows and row count.

        On PostgreSQL it runs in autocommit, one round trip instead of the four of ``BEGIN``, the
        statement, ``COMMIT`` (and a notification as a second call to :meth:`notify`); a single
        statement is atomic by itself, and ``FOR UPDATE SKIP LOCKED`` in it still works. On
        SQLite it is a :meth:`transaction`. For several statements that must go together, use
        :meth:`transaction`.
        """
        if self._shared:
            with self.transaction() as conn:
                return _written(conn.execute(statement, parameters))
        try:
            with self._reachable(), self._autocommit.connect() as conn, _invalidated_on_loss(conn):
                return _written(conn.execute(statement, parameters))
        except DBAPIError as exc:
            _errors.labels("write").inc()
            self._raise_translated(exc)

    def write_each(self, statements: Sequence[tuple[Executable, Any]]) -> list[Written]:
        """Independent write statements (``(statement, parameters)`` pairs), each as
        :meth:`write` would run it, in order; not all-or-nothing as a group. On SQLite they share
        one transaction (one write lock, one commit, instead of one each)."""
        if not self._shared:
            return [self.write(statement, parameters) for statement, parameters in statements]
        with self.transaction() as conn:
            return [_written(conn.execute(statement, parameters)) for statement, parameters in statements]

    def _raise_translated(self, exc: Exception) -> NoReturn:
        """Driver errors about the database file (read-only, damaged, disk full) become a
        :class:`DatabaseUnavailableError` naming the file and what to do; others pass unchanged."""
        problem = describe_database_error(exc, self.description)
        if problem is None:
            raise exc
        raise problem from exc

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        """Driver errors that mean "no database there" become :class:`DatabaseUnavailableError`."""
        try:
            yield
        except (OperationalError, InterfaceError) as exc:
            if isinstance(exc, OperationalError) and not _connection_problem(exc):
                raise
            raise self.unavailable(exc) from exc
        except Exception as exc:  # the driver's own error, from a prepared read on the driver's cursor
            if not _driver_connection_error(exc):
                raise
            raise self.unavailable(exc) from exc

    def unavailable(self, exc: BaseException) -> DatabaseUnavailableError:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        text = reason[0] if reason else type(exc).__name__
        return DatabaseUnavailableError(
            f"the database {self.description} cannot be reached: {text}; check that PostgreSQL is running and "
            f"accepts this user, and that database_url (signpeer.toml, SIGNPEER_DATABASE_URL or --database-url) "
            f"is right")

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self.engine.connect()
        return self._conn

    def memo(self, key: str, build: Callable[[], T]) -> T:
        """What ``build()`` returns, built once per database under ``key``: for statements a store
        makes for this dialect (``prepare``, ``upsert``) that would cost a compile on every request
        if a short-lived object built them. Use a key no other owner uses (your owner name first)."""
        try:
            return cast("T", self._memo[key])
        except KeyError:
            value = self._memo[key] = build()
            return value

    def prepare(self, statement: Select[Any]) -> PreparedRead:
        """A fixed read compiled once for this database, run on the driver's cursor (about a fifth
        of the cost of :meth:`Connection.execute`); for reads on hot paths, see :mod:`.prepared`."""
        return PreparedRead(self, statement)

    def upsert(
        self, table: Table, keys: Sequence[str],
        update: Callable[[Any], Mapping[str, Any]] | None = None,
    ) -> Insert:
        """``INSERT ... ON CONFLICT (keys) DO UPDATE``, for this database's dialect.

        ``update`` gets the ``excluded`` row (the values the insert would have written) and returns
        the columns to set; by default every column that is not a key takes the new value. Execute
        the statement with the row (or a list of rows) as parameters.
        """
        stmt: Any  # the dialects' Insert classes share on_conflict_do_update and excluded, not a base class
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as postgresql_insert

            stmt = postgresql_insert(table)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(table)
        excluded = stmt.excluded
        if update is None:
            values: Mapping[str, Any] = {c.name: excluded[c.name] for c in table.columns if c.name not in keys}
        else:
            values = update(excluded)
        upsert: Insert = stmt.on_conflict_do_update(index_elements=list(keys), set_=dict(values))
        return upsert

    # -- notifications between processes (see .notifications) --------------------------------
    def notify(self, channel: str, payload: str = "", conn: Connection | None = None) -> None:
        """Tell every process listening on ``channel``. Given the connection of an open
        :meth:`transaction`, the listeners are told when (and only if) it commits."""
        message = encode(channel, payload)
        if self.dialect == "postgresql":
            statement = select(func.pg_notify(PG_CHANNEL, message))
            if conn is not None:
                conn.execute(statement)
            else:
                self.write(statement)
            return
        wake = self._wake_directory()
        with self._lock:
            if conn is not None and self._writing:
                after_commit(conn, lambda: wake.send([message]))  # the listeners look once it is there
                return
        wake.send([message])

    def listen(self, channel: str, callback: Callback) -> Callable[[], None]:
        """Call ``callback(payload)`` (in a listener thread; keep it quick) for each notification on
        ``channel``, and with None after the listener reconnected (look again: something may
        have been missed). Returns a function that stops listening."""
        return self._listener().listen(channel, callback)

    def listener_ready(self, timeout: float = 5.0) -> bool:
        """Whether this process's listener is connected (always at once on SQLite)."""
        return self._listener().wait_ready(timeout)

    def _listener(self) -> Notifier:
        with self._lock:
            if self._notifier is None:
                if self.dialect == "postgresql":
                    self._notifier = Notifier(PostgresListener(self._listen_connection))
                else:
                    self._notifier = Notifier(self._wake_directory())
            return self._notifier

    def _wake_directory(self) -> WakeDirectory:
        with self._lock:
            if self._wake is None:
                self._wake = WakeDirectory(str(self.engine.url.database))
            return self._wake

    def _listen_connection(self) -> Any:
        import psycopg
        from psycopg.conninfo import make_conninfo

        url = self.engine.url
        params = {k: v for k, v in url.query.items() if isinstance(v, str)}
        params.update({k: str(v) for k, v in (("host", url.host), ("port", url.port), ("user", url.username),
                                               ("password", url.password), ("dbname", url.database))
                       if v is not None})
        conninfo = make_conninfo(connect_timeout=str(CONNECT_TIMEOUT_S), application_name="signpeer-listen",
                                 **params)
        return psycopg.connect(conninfo, autocommit=True)

    # -- locks across processes and nodes -----------------------------------------------------
    def serialize(self, conn: Connection, name: str) -> None:
        """Inside a write transaction (:meth:`transaction`): wait until no other transaction that
        serialized on ``name`` is running, and hold them off until this one ends. PostgreSQL: a
        transaction advisory lock (every node; released at commit or rollback). SQLite: nothing to
        do, its write transaction already holds the whole database. For check-then-insert steps
        that two nodes may run at once (the first migration, setting up the data protection key)."""
        if self.dialect == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(lock_key(name))))

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock named ``name`` held by one process of the whole installation at a time:
        a PostgreSQL session advisory lock (every node), or on SQLite a lock file beside the
        database (every process of the machine, the only one that can open the file)."""
        if self.dialect == "postgresql":
            key = lock_key(name)
            with self._reachable(), self.engine.connect() as conn:
                conn.execute(select(func.pg_advisory_lock(key)))
                conn.commit()
                try:
                    yield
                finally:
                    try:
                        conn.execute(select(func.pg_advisory_unlock(key)))
                        conn.commit()
                    except DBAPIError:  # the connection broke: PostgreSQL released the lock with it
                        conn.invalidate()
            return
        directory = Path(str(self.engine.url.database) + ".locks")
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        try:
            directory.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(directory / f"{safe}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise DatabaseUnavailableError(
                f"data directory not writable: cannot create the lock file {directory / safe}.lock ({exc.strerror}); "
                f"make the database's directory writable by the user signpeer runs as") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def close(self) -> None:
        """Close the connections (the database can be used again: it reconnects)."""
        with self._lock:
            notifier, self._notifier = self._notifier, None
            wake, self._wake = self._wake, None
        if notifier is not None:
            notifier.close()
        if wake is not None:
            wake.close()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self.engine.dispose()


@dataclass(frozen=True)
class Written:
    """What :meth:`Database.write` did: the rows its ``RETURNING`` clause gave, and the rows it
    changed (with ``RETURNING``: as many as it gave)."""

    rows: list[Row[Any]]
    rowcount: int


def _written(result: CursorResult[Any]) -> Written:
    if not result.returns_rows:
        return Written([], result.rowcount)
    rows = list(result.all())  # with RETURNING, a driver may not count (psycopg: -1): the rows do
    return Written(rows, len(rows))


@contextmanager
def _invalidated_on_loss(conn: Connection) -> Iterator[None]:
    """A connection whose server went away is thrown away, not reset and put back in the pool; so
    are the pool's resting ones (they went with the server; SQLAlchemy does the same for errors
    it sees itself)."""
    try:
        yield
    except Exception as exc:
        if _driver_connection_error(exc) and not conn.invalidated:
            conn.invalidate()
            conn.engine.pool.dispose()
        raise


def _driver_connection_error(exc: BaseException) -> bool:
    """Whether a psycopg error (raised past SQLAlchemy) means the connection failed."""
    if not type(exc).__module__.startswith("psycopg"):
        return False
    import psycopg

    if isinstance(exc, psycopg.InterfaceError):
        return True
    return isinstance(exc, psycopg.OperationalError) and _sqlstate_is_connection(getattr(exc, "sqlstate", None))


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

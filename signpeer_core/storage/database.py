"""The database: one SQLAlchemy engine per process, made from a database URL, and its transactions.

``sqlite:///<path>`` (the default, ``signpeer.db`` in the data directory) or
``postgresql://user:password@host:port/database`` (psycopg 3, SQLAlchemy's connection pool; the
database several nodes share, see docs/cluster.md): the same statements run on both, and
:func:`~.engine.create_engine` (:mod:`.engine`, with what the driver's errors mean) is the only place that knows which database it is. Every statement of signpeer and of its plugins is
written with SQLAlchemy Core (``Table`` metadata, no ORM); the few dialect-specific statements
(an upsert) go through :meth:`Database.upsert`. The few reads and writes on hot paths are compiled
once and run on the driver's cursor (:meth:`Database.prepare`, :meth:`Database.prepare_write`).

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
``write()``, ``read()``, ``prepare()``/``prepare_write()`` (hot statements), ``upsert()``, ``notify()``,
``listen()`` and ``lock()``; a plugin keeps its own ``Table`` metadata and migrations
(:class:`signpeer_core.storage.migrations.MigrationSource`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar, cast

from sqlalchemy import Connection, CursorResult, Executable, Row, Table, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import Insert, UpdateBase

from signpeer_core.errors import DatabaseUnavailableError
from signpeer_core.metrics import counter
from signpeer_core.storage import aftercommit
from signpeer_core.storage.aftercommit import after_commit
from signpeer_core.storage.engine import (  # noqa: F401  (hide_password, SQLITE_SUFFIXES: callers import them from here)
    CONNECT_TIMEOUT_S,
    SQLITE_SUFFIXES,
    _connection_problem,
    _driver_connection_error,
    create_engine,
    describe_database_error,
    hide_password,
    lock_key,
    raise_as_sqlalchemy_error,
)
from signpeer_core.storage.filelocks import named_lock
from signpeer_core.storage.notifications import (
    Callback,
    Notifier,
    PostgresListener,
    WakeDirectory,
    encode,
)
from signpeer_core.storage.prepared import PreparedNotify, PreparedRead, PreparedWrite

T = TypeVar("T")

_errors = counter("signpeer_database_errors", "Database statements that failed, by kind (read, write)",
                  ("operation",))

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
        except Exception as exc:  # the drivers' own errors too, from a PreparedRead in the block (its cursor)
            if not _driver_error(exc):
                raise
            _errors.labels("write").inc()
            self._raise_translated(exc)
        # Committed, and the connection (SQLite: the write lock) given back: see .aftercommit.
        aftercommit.run(actions)

    @contextmanager
    def _locked_transaction(self) -> Iterator[Connection]:
        with self._lock:
            conn = self._idle_connection()
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

    def _idle_connection(self) -> Connection:
        """SQLite's connection of this process, out of any transaction, for a write (under ``_lock``)."""
        if self._writing:
            raise RuntimeError("a database transaction is already open in this thread")
        conn = self._connection()
        if conn.in_transaction():  # begun by SQLAlchemy for reads: nothing to undo
            conn.rollback()
        return conn

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

    def prepare_write(self, statement: UpdateBase) -> PreparedWrite:
        """A fixed write statement compiled once for this database, run on the driver's cursor as
        :meth:`write` runs a statement (about a third of its CPU time); for writes on hot paths,
        see :mod:`.prepared`."""
        return PreparedWrite(self, statement)

    def write_prepared(self, sql: str, parameters: Any, returning: bool) -> tuple[list[tuple[Any, ...]], int]:
        """:meth:`PreparedWrite.run`: ``sql`` (this dialect's, with its converted ``parameters``) as
        a transaction of its own on the driver's cursor; its rows (when ``returning``) and row count."""
        try:
            if not self._shared:
                with self._reachable(), self._autocommit.connect() as conn, _invalidated_on_loss(conn):
                    return _run_on_cursor(conn, sql, parameters, returning, False)
            with self._lock:
                return _run_on_cursor(self._idle_connection(), sql, parameters, returning, True)
        except Exception as exc:  # SQLAlchemy's error (_run_on_cursor wraps the driver's), as write() counts it
            if not _driver_error(exc):
                raise
            _errors.labels("write").inc()
            self._raise_translated(exc)

    def write_in(self, conn: Connection, sql: str, parameters: Any, returning: bool,
                 many: bool) -> tuple[list[tuple[Any, ...]], int]:
        """:meth:`PreparedWrite.run_in`: ``sql`` with its converted ``parameters`` (a list of them
        when ``many``) in the caller's transaction on ``conn``; its rows (when ``returning``) and
        row count. Its errors are SQLAlchemy's, as ``conn.execute()`` raises them (an
        :class:`~sqlalchemy.exc.IntegrityError` for a taken key); the transaction translates and
        counts them as it does those (:meth:`transaction`)."""
        return _run_on_cursor(conn, sql, parameters, returning, False, many)

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
        if self.dialect == "postgresql":
            # Compiled once: building and compiling the SELECT on each call cost more than its round trip.
            self.memo("core.notify", lambda: PreparedNotify(self)).run(channel, payload, conn)
            return
        message = encode(channel, payload)
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
        a PostgreSQL session advisory lock (every node), or on SQLite a byte-range lock on one
        lock file beside the database (every process of the machine, the only one that can open
        the file; :mod:`.filelocks`)."""
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
        with named_lock(str(self.engine.url.database), name):
            yield

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


def _driver_error(exc: BaseException) -> bool:
    """An error of the database: SQLAlchemy's, or SQLite's or psycopg's own (statements run on
    the driver's cursor)."""
    return isinstance(exc, (DBAPIError, sqlite3.Error)) or type(exc).__module__.startswith("psycopg")


def _run_on_cursor(conn: Connection, sql: str, parameters: Any, returning: bool,
                   immediate: bool, many: bool = False) -> tuple[list[tuple[Any, ...]], int]:
    """One statement on ``conn``'s DBAPI cursor (``many``: once per parameter set, the driver's
    ``executemany``, no ``RETURNING``); with ``immediate`` (SQLite in autocommit mode) inside
    ``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on an error). Listeners of the engine's
    ``before_cursor_execute`` see it, as :class:`PreparedRead`'s statements.

    The driver's errors come out as SQLAlchemy's (``sqlite3.IntegrityError`` and psycopg's
    ``UniqueViolation`` as :class:`sqlalchemy.exc.IntegrityError`, the driver's error its
    ``orig``), as :meth:`Connection.execute` raises them: a caller sees one kind whichever way its
    statement ran (:func:`raise_as_sqlalchemy_error`)."""
    cursor = conn.connection.cursor()
    try:
        listeners = conn.dispatch.before_cursor_execute
        if listeners:
            listeners(conn, cursor, sql, parameters, None, many)
        if not immediate:
            return _execute(cursor, sql, parameters, returning, many)
        cursor.execute("BEGIN IMMEDIATE")
        try:
            written = _execute(cursor, sql, parameters, returning, many)
            cursor.execute("COMMIT")
        except BaseException:
            if cursor.connection.in_transaction:  # SQLite ends some failed transactions itself
                cursor.execute("ROLLBACK")
            raise
        return written
    except Exception as exc:
        raise_as_sqlalchemy_error(conn, sql, parameters, exc, many)
    finally:
        cursor.close()


def _execute(cursor: Any, sql: str, parameters: Any, returning: bool,
             many: bool = False) -> tuple[list[tuple[Any, ...]], int]:
    """One statement on a DBAPI cursor (``many``: ``executemany``): its ``RETURNING`` rows (when
    ``returning``) and row count (with ``RETURNING``, the rows': a driver may not count them,
    psycopg says -1)."""
    if many:
        cursor.executemany(sql, parameters)
        return [], cursor.rowcount
    cursor.execute(sql, parameters)
    if not returning:
        return [], cursor.rowcount
    rows = list(cursor.fetchall())
    return rows, len(rows)


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

"""A fixed read compiled once and run on the driver's cursor: the hottest reads' fast path.

SQLAlchemy Core costs about 20–30 µs per executed statement (execution context, result object,
caching lookups) on top of SQLite's 3–5 µs. Most reads pay that gladly. A few run on every
renewal step, reload and poll (a worker's properties, an INTERNAL keystore, a generation
counter); for those, :class:`PreparedRead` compiles the SQLAlchemy statement once for the
database's dialect — so SQLite and PostgreSQL run the same code, the dialect renders the SQL and
its parameter style — and executes it on the DBAPI connection that :meth:`Database.read` hands
out (the transaction's connection inside a transaction of the same thread, so it sees its own
writes).

What it gives up, and so refuses at construction: an expanding ``IN`` parameter (bind parameters
are converted by the dialect's own processors, as ``execute`` does). Values come back as the driver returns
them, without SQLAlchemy's result processing: callers convert (``bytes(...)`` for a BLOB, which
PostgreSQL's driver returns as a ``memoryview``; ``int(...)``).

Listeners of the engine's ``before_cursor_execute`` event still see these statements (with no
execution context): a test or a tracer that counts statements through SQLAlchemy's events
counts the prepared reads too. Without listeners the check costs one attribute lookup.

:class:`PreparedWrite` does the same for a fixed write statement on a hot path (the RA queue's
insert and answer: two per one-time signature), run as :meth:`Database.write` runs a statement —
a transaction of its own (SQLite: ``BEGIN IMMEDIATE`` … ``COMMIT`` under the process's connection
lock; PostgreSQL: one statement in autocommit, one round trip), its ``RETURNING`` rows as the
driver returns them. About a third of ``Database.write``'s CPU time on SQLite. Its
:meth:`~PreparedWrite.run_in` runs it in a caller's transaction instead (the audit records,
properties and scope row of every published change), without SQLAlchemy's execution layer.
``run(params, notify=(channel, payload))`` also tells the listeners (:meth:`Database.notify`)
once the write committed and only if it changed a row; on PostgreSQL the notification is a
``pg_notify`` in the same statement, a data-modifying ``WITH`` (the RA queue's insert of a
pending request: one round trip instead of two).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, literal_column, select
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import UpdateBase

from signpeer_core.errors import DatabaseUnavailableError
from signpeer_core.storage.engine import raise_as_sqlalchemy_error
from signpeer_core.storage.notifications import PG_CHANNEL, encode

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from signpeer_core.storage.database import Database

#: The bind parameter of a notifying write's message (:meth:`PreparedWrite.run` with ``notify``).
_NOTIFY_MESSAGE = "signpeer_notify_message"


class _Prepared:
    """A statement compiled once for ``database``'s dialect, with its parameters' conversions."""

    def __init__(self, database: Database, statement: Select[Any] | UpdateBase) -> None:
        self.database = database
        dialect = database.engine.dialect
        compiled = statement.compile(dialect=dialect)
        self._processors = {}
        for name, bind in compiled.binds.items():
            if bind.expanding:
                raise ValueError(f"parameter '{name}' needs SQLAlchemy's type processing: use Connection.execute")
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:  # e.g. a Float on SQLite: the dialect's own conversion
                self._processors[name] = processor
        self.sql = compiled.string
        self._compiled = compiled
        self._positions = list(compiled.positiontup or ()) if compiled.positional else None

    def _parameters(self, params: Mapping[str, Any]) -> Any:
        values = self._compiled.construct_params(dict(params))
        for name, processor in self._processors.items():
            if values.get(name) is not None:
                values[name] = processor(values[name])
        if self._positions is None:
            return values
        return tuple(values[name] for name in self._positions)


class PreparedRead(_Prepared):
    """One ``SELECT``, compiled for ``database``'s dialect, run without SQLAlchemy's execution layer."""

    def all(self, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Every row, as the driver returns them. A read that finds its pooled connection gone
        (PostgreSQL restarted) is tried once more on a new connection."""
        parameters = self._parameters(params or {})
        try:
            return self._run(parameters)
        except DatabaseUnavailableError:
            if self.database.dialect == "sqlite":
                raise
            return self._run(parameters)

    def _run(self, parameters: Any) -> list[tuple[Any, ...]]:
        with self.database.read() as conn:
            cursor = conn.connection.cursor()  # the DBAPI cursor; the connection is ours while read() holds it
            try:
                listeners = conn.dispatch.before_cursor_execute
                if listeners:
                    listeners(conn, cursor, self.sql, parameters, None, False)
                cursor.execute(self.sql, parameters)
                return list(cursor.fetchall())
            except Exception as exc:  # SQLAlchemy's error, as Connection.execute raises it: read() counts and translates it
                raise_as_sqlalchemy_error(conn, self.sql, parameters, exc)
            finally:
                cursor.close()

    def scalar(self, params: Mapping[str, Any] | None = None) -> Any:
        """The first column of the first row, or None when there is no row."""
        rows = self.all(params)
        return rows[0][0] if rows else None


class PreparedNotify(_Prepared):
    """``SELECT pg_notify(…)`` compiled once (PostgreSQL): :meth:`Database.notify`'s statement."""

    def __init__(self, database: Database) -> None:
        super().__init__(database, select(func.pg_notify(PG_CHANNEL, bindparam(_NOTIFY_MESSAGE))))

    def run(self, channel: str, payload: str, conn: Connection | None = None) -> None:
        """Notify now (a statement of its own), or in ``conn``'s transaction (sent at its commit)."""
        parameters = self._parameters({_NOTIFY_MESSAGE: encode(channel, payload)})
        if conn is not None:
            self.database.write_in(conn, self.sql, parameters, False, False)
        else:
            self.database.write_prepared(self.sql, parameters, False)


class PreparedWrite(_Prepared):
    """One write statement (``INSERT``, ``UPDATE``, ``DELETE``; ``RETURNING`` allowed), compiled for
    ``database``'s dialect, run as :meth:`Database.write` runs it without SQLAlchemy's execution
    layer. :attr:`keys` names the ``RETURNING`` columns (empty without)."""

    def __init__(self, database: Database, statement: UpdateBase) -> None:
        super().__init__(database, statement)
        returning = self._compiled.effective_returning
        self.keys: tuple[str, ...] = tuple(str(column.key) for column in returning) if returning else ()
        self._statement = statement
        self._notifying: _Prepared | None = None

    def run(self, params: Mapping[str, Any] | None = None,
            notify: tuple[str, str] | None = None) -> tuple[list[tuple[Any, ...]], int]:
        """Run the statement as a transaction of its own: its ``RETURNING`` rows (as the driver
        returns them) and the number of rows it changed (with ``RETURNING``: as many as it gave).

        ``notify`` (channel, payload): once the write committed, and only if it changed a row,
        tell the listeners as :meth:`Database.notify` does. On PostgreSQL in the same statement
        (``WITH written AS (<the write> RETURNING …) SELECT …, pg_notify(…) FROM written``): one
        round trip, and the notification is sent at its commit; on SQLite after the commit."""
        if notify is None or self.database.dialect != "postgresql":
            written = self.database.write_prepared(self.sql, self._parameters(params or {}), bool(self.keys))
            if notify is not None and written[1] > 0:
                self.database.notify(*notify)
            return written
        notifying = self._notifying_statement()
        values = dict(params or {})
        values[_NOTIFY_MESSAGE] = encode(*notify)
        rows, count = self.database.write_prepared(notifying.sql, notifying._parameters(values), True)
        return ([row[:-1] for row in rows] if self.keys else []), count

    def _notifying_statement(self) -> _Prepared:
        """The write as a data-modifying ``WITH`` whose ``SELECT`` calls ``pg_notify`` once per
        written row (PostgreSQL delivers one of identical notifications of a transaction)."""
        if self._notifying is None:
            statement = self._statement if self.keys else self._statement.returning(literal_column("1"))
            written = statement.cte("written")
            columns = [written.c[key] for key in self.keys]
            select_ = select(*columns, func.pg_notify(PG_CHANNEL, bindparam(_NOTIFY_MESSAGE))).select_from(written)
            self._notifying = _Prepared(self.database, select_)
        return self._notifying

    def run_in(self, conn: Connection,
               params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> tuple[list[tuple[Any, ...]], int]:
        """Run the statement in the caller's write transaction (``conn`` from
        :meth:`Database.transaction`) on its DBAPI cursor: its ``RETURNING`` rows and the number of
        rows it changed, as :meth:`run`. A list of parameter sets runs the statement once for each
        (the driver's ``executemany``; no ``RETURNING`` then). For the statements that every
        published change writes (its audit records, its properties, its generation and scope)."""
        if isinstance(params, Mapping):
            return self.database.write_in(conn, self.sql, self._parameters(params), bool(self.keys), False)
        if self.keys:
            raise ValueError("a statement with RETURNING runs with one parameter set at a time")
        return self.database.write_in(conn, self.sql, [self._parameters(p) for p in params], False, True)

"""Counting the SQL statements an operation runs, through SQLAlchemy's engine events.

``with counted(services.store.database) as seen: ...`` records every statement the database
runs meanwhile, on SQLite and PostgreSQL alike: those of SQLAlchemy's execution, the prepared
reads (:mod:`signpeer_core.storage.prepared` tells the same event) and the transaction brackets.
:class:`Statements` sorts them: reads, writes, write transactions (a commit after a write),
locks (PostgreSQL's advisory locks; SQLite's are lock files, no statement) and notifications.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

if TYPE_CHECKING:
    from signpeer_core.storage.database import Database

_WRITES = ("INSERT", "UPDATE", "DELETE")
_WROTE = "signpeer.testing.wrote"


@dataclass
class Statements:
    """The statements seen, in order, and the write transactions committed."""

    sql: list[str] = field(default_factory=list)
    write_transactions: int = 0

    def _kind(self, statement: str) -> str:
        s = statement.lstrip().upper()
        if "PG_ADVISORY" in s:
            return "lock"
        if "PG_NOTIFY" in s:
            return "notify"
        if s.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            return "bracket"
        if s.startswith(_WRITES):
            return "write"
        if s.startswith(("SELECT", "WITH")):
            return "read"
        return "other"

    def of(self, kind: str) -> list[str]:
        return [s for s in self.sql if self._kind(s) == kind]

    @property
    def reads(self) -> int:
        return len(self.of("read"))

    @property
    def writes(self) -> int:
        return len(self.of("write"))

    @property
    def statements(self) -> int:
        """Reads and writes: what the operation asked of the database (not brackets, locks, notifications)."""
        return self.reads + self.writes

    def touching(self, table: str) -> list[str]:
        return [s for s in self.sql if self._kind(s) in ("read", "write") and f" {table}" in s.lower()]

    def summary(self) -> str:
        return (f"{self.statements} statements ({self.reads} reads, {self.writes} writes), "
                f"{self.write_transactions} write transaction(s), {len(self.of('lock'))} lock statements")


@contextmanager
def counted(database: Database) -> Iterator[Statements]:
    """Record the statements ``database`` runs inside the block."""
    seen = Statements()
    engine = database.engine

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        seen.sql.append(" ".join(statement.split()))
        if seen._kind(statement) == "write":
            conn.info[_WROTE] = True

    def commit(conn: Any) -> None:
        if conn.info.pop(_WROTE, False):
            seen.write_transactions += 1

    def rollback(conn: Any) -> None:
        conn.info.pop(_WROTE, None)

    listeners = (("before_cursor_execute", before), ("commit", commit), ("rollback", rollback))
    for name, fn in listeners:
        event.listen(engine, name, fn)
    try:
        yield seen
    finally:
        for name, fn in listeners:
            event.remove(engine, name, fn)

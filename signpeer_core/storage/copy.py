"""``signpeer db migrate``: copy one database (a node's SQLite) into an empty PostgreSQL database.

The target is first brought to the newest schema by the usual migrations (every owner: the core
and each installed plugin), then every table's rows are copied in ONE transaction: configuration,
the audit log (with its ids), INTERNAL keystores, token activations, and every plugin's tables
(incoming peers, the RA queue, and whatever a third-party plugin declares). The node registry
is not copied (its rows are processes of the old server). Sequences behind integer keys are set
past the copied ids. Then the copy is read back and compared with the source, table by table
(row count and a digest of the sorted rows); any difference rolls nothing back but is an error
that names the table, and the target should be dropped and the copy run again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, MetaData, Table, func, inspect, select, text

from signpeer_core.errors import ConfigurationError
from signpeer_core.storage.database import Database
from signpeer_core.storage.migrations import MigrationSource, core_source, migrate

#: Not copied: the target's migration runner wrote its own, and processes are per server run.
_SKIPPED = {"nodes"}


@dataclass
class CopyReport:
    source: str
    target: str
    tables: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


def copy_database(source: Database, target_url: str, sources: Sequence[MigrationSource]) -> CopyReport:
    """Copy ``source`` into the empty PostgreSQL database of ``target_url``; verified."""
    target = Database(target_url)
    try:
        if target.dialect != "postgresql":
            raise ConfigurationError("db migrate copies into PostgreSQL: give a postgresql:// URL")
        with target.read() as conn:
            existing = inspect(conn).get_table_names()
        if existing:
            raise ConfigurationError(
                f"the database {target.description} is not empty ({len(existing)} table(s), e.g. "
                f"{', '.join(sorted(existing)[:3])}); give an empty database (createdb) so that nothing is mixed")
        migrate(target, [core_source(), *sources])
        report = CopyReport(source.description, target.description)
        with source.read() as conn:
            source_tables = _tables(conn)
        with target.transaction() as out:
            target_tables = _tables(out)
            missing = sorted(set(source_tables) - set(target_tables))
            if missing:
                raise ConfigurationError(
                    f"the source has table(s) {', '.join(missing)} that no installed plugin declares; install the "
                    f"plugin that owns them, then run db migrate again")
            for name, table in sorted(source_tables.items()):
                with source.read() as conn:
                    rows = [dict(r._mapping) for r in conn.execute(select(table)).all()]
                report.tables[name] = len(rows)
                _write(out, target_tables[name], rows)
        _verify(source, target, source_tables)
        return report
    finally:
        target.close()


def _tables(conn: Connection) -> dict[str, Table]:
    metadata = MetaData()
    metadata.reflect(conn)
    return {name: table for name, table in metadata.tables.items()
            if name not in _SKIPPED and not name.startswith("alembic_version_")}


def _write(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    if table.name == "meta":
        # The target's own records of its migrations stay; the source's counters win.
        rows = [r for r in rows if not str(r["key"]).startswith("migrations.")]
        conn.execute(table.delete().where(table.c.key.in_([r["key"] for r in rows])))
    if rows:
        conn.execute(table.insert(), rows)
    for column in table.primary_key.columns:
        sequence = conn.execute(select(func.pg_get_serial_sequence(table.name, column.name))).scalar()
        if sequence is not None:  # an id column: continue after the copied ids
            conn.execute(text("SELECT setval(CAST(:s AS regclass), GREATEST(COALESCE(MAX(t.c), 0), 1)) FROM "
                              "(SELECT MAX(" + conn.dialect.identifier_preparer.quote(column.name) + ") AS c FROM "
                              + conn.dialect.identifier_preparer.quote(table.name) + ") t"), {"s": sequence})


def _digest(conn: Connection, table: Table) -> tuple[int, str]:
    names = sorted(c.name for c in table.columns)  # the same order whatever order the columns were made in
    rows = conn.execute(select(*[table.c[n] for n in names])).all()
    if table.name == "meta":
        rows = [r for r in rows if not str(r[names.index("key")]).startswith("migrations.")]
    normalized = sorted(repr(tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)) for r in rows)
    digest = hashlib.sha256()
    for line in normalized:
        digest.update(line.encode() + b"\n")
    return len(normalized), digest.hexdigest()


def _verify(source: Database, target: Database, tables: dict[str, Table]) -> None:
    with target.read() as conn:
        copied = _tables(conn)
        target_digests = {name: _digest(conn, copied[name]) for name in tables}
    for name, table in tables.items():
        with source.read() as conn:
            expected = _digest(conn, table)
        if target_digests[name] != expected:
            raise ConfigurationError(
                f"the copy of table {name} differs from the source ({target_digests[name][0]} row(s) copied, "
                f"{expected[0]} in the source); drop the target database and run db migrate again")

"""Schema migrations: every owner (the core, each plugin) migrates its own tables with Alembic.

An owner is described by a :class:`MigrationSource`: its name, the directory of its Alembic
revision scripts and its ``Table`` metadata. The core's source comes first; plugins return theirs
from the ``signpeer_migrations`` hook. Each owner has its own version table,
``alembic_version_<owner>``, so owners' revisions never meet. :func:`migrate` runs when the store
opens: users never need an ``alembic.ini`` or the ``alembic`` command.

Two processes may open a fresh database at once (``signpeer serve --workers N``): the migrations
run inside one write transaction, which on SQLite holds the database's write lock
(``BEGIN IMMEDIATE``), so the second process waits, then finds every owner at its head and does
nothing. On PostgreSQL the transaction first takes an advisory lock (``pg_advisory_xact_lock``,
released at commit), so two nodes starting at once on a fresh database migrate once. The DDL of
both databases is transactional, so a failed migration leaves nothing behind.

Opening an up-to-date database costs a few reads and no Alembic at all: after migrating an owner
the runner records in ``meta`` (``migrations.<owner>``) a fingerprint of the owner's revision
files and the revision it reached; while both still match, the owner is skipped.

Databases made before per-owner migrations have ``meta.schema_version`` 1 to 4 and no version
tables. They are adopted: the old version is kept in ``meta.legacy_schema_version``, and each
owner whose version table is missing is stamped at the revision its
:attr:`MigrationSource.legacy_revisions` gives for that version (the tables are already there),
then upgraded as usual. Data is untouched.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, MetaData, Select, column, select, table
from sqlalchemy.exc import OperationalError, ProgrammingError

from signpeer_core.errors import ConfigurationError, PluginError
from signpeer_core.storage.tables import meta

if TYPE_CHECKING:
    from alembic.config import Config

    from signpeer_core.storage.database import Database

#: The last ``schema_version`` of the migrations before Alembic.
LEGACY_LATEST = 4
_OWNER = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
_ENV_DIR = Path(__file__).with_name("migration_env")


@dataclass(frozen=True)
class MigrationSource:
    """One owner's tables and migrations (what a plugin's ``signpeer_migrations`` hook returns)."""

    #: The owner's name: lower case letters, digits and ``_``; its version table is
    #: ``alembic_version_<owner>``. Usually the plugin's entry-point name.
    owner: str
    #: The directory holding the owner's Alembic revision scripts (installed with the package,
    #: e.g. ``Path(__file__).parent / "migrations"``).
    location: str | os.PathLike[str]
    #: The owner's tables as its code queries them (tests compare them with the migrated schema).
    metadata: MetaData | None = None
    #: For databases made before per-owner migrations: the old ``schema_version`` at which this
    #: owner's tables were complete → the revision that made the same tables. Third-party owners
    #: leave it empty.
    legacy_revisions: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _OWNER.match(self.owner):
            raise PluginError(f"migration owner name '{self.owner}' must be lower case letters, digits and _")

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.owner}"

    def legacy_revision(self, legacy_version: int) -> str | None:
        """The revision to stamp on a database adopted at ``legacy_version`` (None: not there yet)."""
        reached = [v for v in self.legacy_revisions if v <= legacy_version]
        return self.legacy_revisions[max(reached)] if reached else None

    def fingerprint(self) -> str:
        """Names and sizes of the revision scripts: changes when a revision is added or removed."""
        digest = hashlib.sha256()
        try:
            entries = sorted((e.name, e.stat().st_size) for e in os.scandir(self.location)
                             if e.name.endswith(".py") and e.name != "__init__.py")
        except OSError as exc:
            raise PluginError(f"the migrations of '{self.owner}' are not readable at {self.location}: {exc}") from exc
        for name, size in entries:
            digest.update(f"{name}\0{size}\0".encode())
        return digest.hexdigest()[:32]


def core_source() -> MigrationSource:
    """The core's own tables: configuration, audit log, keystores, token activation."""
    from signpeer_core.storage import tables

    return MigrationSource(owner="core", location=Path(__file__).with_name("versions"), metadata=tables.metadata,
                           legacy_revisions={1: "core_0001", 4: "core_0002"})


def migrate(database: Database, sources: Sequence[MigrationSource]) -> None:
    """Bring every owner's tables to its newest revision (the core's source first)."""
    owners = [s.owner for s in sources]
    if not owners or owners[0] != "core":
        raise PluginError("the core's migrations must run first")
    if len(set(owners)) != len(owners):
        dup = next(o for o in owners if owners.count(o) > 1)
        raise PluginError(f"two plugins own migrations named '{dup}'; uninstall or disable one of them")
    fingerprints = {s.owner: s.fingerprint() for s in sources}
    if _up_to_date(database, sources, fingerprints):
        return
    with database.transaction() as conn:  # SQLite: the write lock, held until every owner is done
        database.serialize(conn, "migrations")  # PostgreSQL: every node; one migrates, the others wait
        legacy = _legacy_version(database, conn)
        for source in sources:
            _upgrade(database, conn, source, legacy, fingerprints[source.owner])


def _record_key(owner: str) -> str:
    return f"migrations.{owner}"


def _versions(conn: Connection, source: MigrationSource) -> str:
    query: Select[str] = select(column("version_num")).select_from(table(source.version_table))
    rows: list[str] = list(conn.execute(query).scalars())
    return ",".join(sorted(rows))


def _up_to_date(database: Database, sources: Sequence[MigrationSource], fingerprints: dict[str, str]) -> bool:
    """Whether every owner is where its recorded fingerprint says (reads only, no Alembic)."""
    with database.read() as conn:
        try:
            records = dict(conn.execute(select(meta.c.key, meta.c.value)
                                        .where(meta.c.key.like("migrations.%"))).all())
            for source in sources:
                record = records.get(_record_key(source.owner))
                if record is None:
                    return False
                fingerprint, _, versions = record.partition(" ")
                if fingerprint != fingerprints[source.owner] or versions != _versions(conn, source):
                    return False
        except (OperationalError, ProgrammingError):  # a fresh database: no such table yet
            return False
    return True


def _legacy_version(database: Database, conn: Connection) -> int | None:
    """The ``schema_version`` of a database made before per-owner migrations (None: not one)."""
    from sqlalchemy import inspect

    inspector = inspect(conn)
    if not inspector.has_table("meta"):
        return None  # a fresh database
    values = dict(conn.execute(select(meta.c.key, meta.c.value)
                               .where(meta.c.key.in_(("schema_version", "legacy_schema_version")))).all())
    if "legacy_schema_version" in values:
        return int(values["legacy_schema_version"])
    if inspector.has_table("alembic_version_core"):
        return None
    version = int(values.get("schema_version", "1"))  # the first release wrote no schema_version
    if version > LEGACY_LATEST:
        raise ConfigurationError(
            f"database {database.description} has schema version {version}, newer than this signpeer "
            f"understands ({LEGACY_LATEST}); upgrade signpeer")
    conn.execute(meta.insert().values(key="legacy_schema_version", value=str(version)))
    return version


def _alembic_config(conn: Connection, source: MigrationSource) -> Config:
    from alembic.config import Config

    config = Config(attributes={"connection": conn, "version_table": source.version_table,
                                "metadata": source.metadata})
    config.set_main_option("script_location", str(_ENV_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", os.fspath(source.location).replace("%", "%%"))
    return config


def _upgrade(database: Database, conn: Connection, source: MigrationSource, legacy: int | None,
             fingerprint: str) -> None:
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    config = _alembic_config(conn, source)
    script = ScriptDirectory.from_config(config)
    current = MigrationContext.configure(conn, opts={"version_table": source.version_table}).get_current_heads()
    if not current and legacy is not None:
        stamp = source.legacy_revision(legacy)
        if stamp is not None:  # the tables exist already: record that, then upgrade as usual
            command.stamp(config, stamp)
            current = (stamp,)
    heads = script.get_heads()
    for revision in current:
        try:
            script.get_revision(revision)
        except CommandError:
            upgrade = "upgrade signpeer" if source.owner == "core" else f"upgrade the plugin that owns '{source.owner}'"
            raise ConfigurationError(
                f"database {database.description} has schema version {revision} of '{source.owner}', newer than "
                f"this signpeer understands ({', '.join(heads)}); {upgrade}") from None
    if set(current) != set(heads):
        command.upgrade(config, "heads")
    record = f"{fingerprint} {_versions(conn, source)}"
    conn.execute(database.upsert(meta, ["key"]), {"key": _record_key(source.owner), "value": record})

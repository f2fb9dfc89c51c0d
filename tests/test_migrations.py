"""Per-owner migrations: a plugin's own tables through the ``signpeer_migrations`` hook, the
metadata the code queries matching what the migrations made, and two processes migrating a fresh
database at once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, insert, select

from signpeer_core import hookimpl
from signpeer_core.errors import ConfigurationError, PluginError
from signpeer_core.plugins import Registry, get_plugin_manager
from signpeer_core.services import Services
from signpeer_core.settings import load_settings
from signpeer_core.storage import MigrationSource, open_store
from signpeer_core.storage.migrations import core_source

NOTES_0001 = '''
"""Notes: a third-party plugin's table."""
import sqlalchemy as sa
from alembic import op

revision = "notes_0001"
down_revision = None


def upgrade() -> None:
    op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True), sa.Column("text", sa.Text, nullable=False))
'''

NOTES_0002 = '''
"""Notes get an author."""
import sqlalchemy as sa
from alembic import op

revision = "notes_0002"
down_revision = "notes_0001"


def upgrade() -> None:
    op.add_column("notes", sa.Column("author", sa.Text))
'''

notes_metadata = MetaData()
notes = Table("notes", notes_metadata, Column("id", Integer, primary_key=True), Column("text", Text, nullable=False))


class NotesPlugin:
    """A third-party plugin that owns one table."""

    def __init__(self, location: Path) -> None:
        self.location = location

    @hookimpl
    def signpeer_migrations(self) -> list[MigrationSource]:
        return [MigrationSource(owner="notes", location=self.location, metadata=notes_metadata)]


def write_revisions(directory: Path, *revisions: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, source in enumerate(revisions, 1):
        (directory / f"notes_000{i}.py").write_text(textwrap.dedent(source))
    return directory


def versions(path: Path, owner: str) -> list[str]:
    with sqlite3.connect(path) as db:
        return [r[0] for r in db.execute(f"SELECT version_num FROM alembic_version_{owner}")]


def test_a_plugin_owns_its_tables_through_the_hook(tmp_path: Path) -> None:
    location = write_revisions(tmp_path / "notes_migrations", NOTES_0001)
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(NotesPlugin(location), name="notes_plugin")
    registry = Registry(pm)
    services = Services.open(load_settings(tmp_path / "home"), registry=registry, load=False)
    try:
        assert registry.infos["notes_plugin"].registers["tables"] == ["notes"]
        database = services.store.database
        with database.transaction() as conn:
            conn.execute(insert(notes).values(text="hello"))
        with database.read() as conn:
            assert conn.execute(select(notes.c.text)).scalars().all() == ["hello"]
    finally:
        services.close()
    db_path = tmp_path / "home" / "signpeer.db"
    assert versions(db_path, "notes") == ["notes_0001"]
    assert versions(db_path, "core") == ["core_0007"]

    # A new release of the plugin adds a revision: the next open upgrades that owner alone.
    write_revisions(location, NOTES_0001, NOTES_0002)
    store = open_store(f"sqlite:///{db_path}", registry.migration_sources())
    with store.database.read() as conn:
        assert conn.exec_driver_sql("SELECT text, author FROM notes").all() == [("hello", None)]
    store.close()
    assert versions(db_path, "notes") == ["notes_0002"]


def test_an_up_to_date_database_opens_without_alembic(tmp_path: Path) -> None:
    location = write_revisions(tmp_path / "notes_migrations", NOTES_0001)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    open_store(url, [MigrationSource("notes", location)]).close()
    code = textwrap.dedent(f"""
        import sys
        from signpeer_core.storage import MigrationSource, open_store
        open_store({url!r}, [MigrationSource("notes", {str(location)!r})]).close()
        print("alembic" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_newer_plugin_revision_is_refused_naming_the_owner(tmp_path: Path) -> None:
    location = write_revisions(tmp_path / "notes_migrations", NOTES_0001, NOTES_0002)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    open_store(url, [MigrationSource("notes", location)]).close()
    (location / "notes_0002.py").unlink()  # an older release of the plugin
    with pytest.raises(ConfigurationError, match="schema version notes_0002 of 'notes', newer than this signpeer "
                                                 r"understands \(notes_0001\); upgrade the plugin that owns 'notes'"):
        open_store(url, [MigrationSource("notes", location)])


def test_owner_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="lower case"):
        MigrationSource("Bad-Name", tmp_path)
    location = write_revisions(tmp_path / "notes_migrations", NOTES_0001)
    with pytest.raises(PluginError, match="two plugins own migrations named 'notes'"):
        open_store(f"sqlite:///{tmp_path / 'db.sqlite'}",
                   [MigrationSource("notes", location), MigrationSource("notes", location)])


def _owner_sources() -> list[MigrationSource]:
    sources = [core_source()]
    for module in ("signpeer_peerconnector.incoming_store", "signpeer_onetimecrypto.raqueue"):
        try:
            sources.append(__import__(module, fromlist=["migration_source"]).migration_source())
        except ImportError:  # the core suite runs without the plugins
            pass
    return sources


@pytest.mark.parametrize("owner", ["core", "peerconnector", "onetimecrypto"])
def test_the_metadata_the_code_queries_is_what_the_migrations_made(tmp_path: Path, owner: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    sources = {s.owner: s for s in _owner_sources()}
    if owner not in sources:
        pytest.skip(f"the plugin owning '{owner}' is not installed")
    source = sources[owner]
    assert source.metadata is not None
    tables = set(source.metadata.tables)
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", [s for s in sources.values() if s.owner != "core"])
    try:
        with store.database.read() as conn:
            context = MigrationContext.configure(conn, opts={
                "include_name": lambda name, kind, parent: kind != "table" or name in tables})
            assert compare_metadata(context, source.metadata) == []
    finally:
        store.close()


_OPEN_AT_ONCE = """
import sys, time
from pathlib import Path

import alembic.command  # imported before "ready", so both processes reach the database together
from signpeer_core.storage import MigrationSource, open_store

database, location, ready, go = sys.argv[1:]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.005)
open_store("sqlite:///" + database, [MigrationSource("counted", location)]).close()
print("opened")
"""

COUNTED_0001 = '''
import os
import time

import sqlalchemy as sa
from alembic import op

revision = "counted_0001"
down_revision = None


def upgrade() -> None:
    op.create_table("migration_runs", sa.Column("pid", sa.Integer, nullable=False))
    op.execute(sa.text("INSERT INTO migration_runs (pid) VALUES (:pid)").bindparams(pid=os.getpid()))
    time.sleep(0.5)  # hold the lock a while: the other process is certainly waiting for it
'''


def test_two_processes_opening_a_fresh_database_migrate_once(tmp_path: Path) -> None:
    location = tmp_path / "counted"
    location.mkdir()
    (location / "counted_0001.py").write_text(COUNTED_0001)
    database = tmp_path / "db.sqlite"
    go = tmp_path / "go"
    readies = [tmp_path / f"ready{i}" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AT_ONCE, str(database), str(location), str(ready), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for ready in readies]
    try:
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in readies):
            assert time.monotonic() < deadline, "the processes did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.01)
        go.touch()
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if [p.returncode for p in procs] != [0, 0]:
        # The children's stderr whole, in the report's captured output (pytest shortens a long
        # assertion message): a failure here once said only "database is locked".
        for i, (_, err) in enumerate(results):
            print(f"process {i} stderr:\n{err}", file=sys.stderr)
    assert [p.returncode for p in procs] == [0, 0], results
    assert [out for out, _ in results] == ["opened\n", "opened\n"]
    with sqlite3.connect(database) as db:
        runs = [r[0] for r in db.execute("SELECT pid FROM migration_runs")]
        assert len(runs) == 1 and runs[0] in {p.pid for p in procs}
        assert db.execute("SELECT count(*) FROM alembic_version_core").fetchone() == (1,)
        assert db.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)
    assert versions(database, "counted") == ["counted_0001"]

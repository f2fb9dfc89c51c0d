"""Commands about the installation as a whole: ``nodes`` (the node registry) and ``db migrate``
(copy a node's SQLite data into an empty PostgreSQL database; :mod:`signpeer_core.storage.copy`)."""

from __future__ import annotations

import argparse
import datetime
import json
import time

from signpeer_core.cli.base import Command, CommandContext
from signpeer_core.errors import BadRequestError


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class NodesCommand(Command):
    name = "nodes"
    help = "list the server processes of every node on this database, live and stale"
    description = ("Every running signpeer serve process registers itself in the database (node id, host, process "
                   "id, address, the configuration generation it has applied) and refreshes its row every 2 s; a "
                   "row not refreshed for 10 s, or of a process gone from this host, is stale. --prune deletes "
                   "the stale rows. Example: signpeer nodes")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.add_argument("--prune", action="store_true", help="delete the rows of stale processes")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        store = ctx.services(load=False).store
        if args.prune:
            ctx.print(f"Removed {store.nodes.prune()} stale process(es)")
        generation = store.config_generation()
        now = time.time()
        rows = store.nodes.processes()
        if args.json:
            ctx.print(json.dumps({"configGeneration": generation, "processes": [
                {"node": p.node, "host": p.host, "pid": p.pid, "address": p.address, "generation": p.generation,
                 "activeTokens": sorted(p.active_token_ids), "started": p.started, "lastSeen": p.last_seen,
                 "live": p.alive(now)} for p in rows]}, indent=2))
            return 0
        ctx.print(f"Configuration generation {generation}; {len(rows)} server process(es) registered")
        for p in rows:
            state = "live" if p.alive(now) else "STALE"
            behind = "" if p.generation >= generation else f" (behind: generation {p.generation})"
            tokens = ",".join(str(t) for t in sorted(p.active_token_ids)) or "none"
            ctx.print(f"  {state:5} node {p.node} host {p.host} pid {p.pid} {p.address} generation {p.generation}"
                      f"{behind}; active tokens: {tokens}; started {_when(p.started)}, last seen "
                      f"{now - p.last_seen:.0f} s ago")
        return 0


class DbCommand(Command):
    name = "db"
    help = "database operations: migrate a node's data into PostgreSQL"
    description = ("signpeer db migrate --to postgresql://user@host:port/db copies every table of this data "
                   "directory's database (core and plugins, audit log and INTERNAL keystores included) into an "
                   "empty PostgreSQL database, verifies the copy row by row, and says what it copied. Stop the "
                   "server first; then set database_url in signpeer.toml on every node.")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="db_command", metavar="<operation>", required=True)
        migrate = sub.add_parser("migrate", help="copy this node's database into an empty PostgreSQL database")
        migrate.add_argument("--to", required=True, dest="target", metavar="URL",
                             help="the PostgreSQL database to fill (postgresql://user:password@host:port/db)")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        from signpeer_core.server import running_server
        from signpeer_core.storage.copy import copy_database

        if not args.target.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            raise BadRequestError(f"--to must be a postgresql:// URL, not '{args.target.split('@')[-1]}'")
        settings = ctx.settings
        if running_server(settings) is not None:
            raise BadRequestError("a server is running on this data directory; stop it first so that nothing "
                                  "changes during the copy")
        source = ctx.services(load=False)
        report = copy_database(source.store.database, args.target, source.registry.migration_sources())
        for table, count in report.tables.items():
            ctx.print(f"  {table}: {count} row(s)")
        ctx.print(f"Copied {report.rows} row(s) in {len(report.tables)} table(s) from {report.source} to "
                  f"{report.target} and verified them; set database_url = \"{report.target}\" in signpeer.toml "
                  f"(with the password) on every node")
        from signpeer_core.storage.protection import KeySource

        key = KeySource.for_settings(settings)
        where = "SIGNPEER_KEY" if key.key else str(key.path)
        ctx.print(f"The copied secrets and audit chain are sealed with this node's data protection key ({where}): "
                  f"give every node a copy (key_file in signpeer.toml, mode 0600, or SIGNPEER_KEY)")
        return 0

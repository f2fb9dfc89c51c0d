"""``signpeer newplugin``: write the skeleton of a new plugin package (:mod:`signpeer_core.pluginskeleton`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from signpeer_core.cli.base import Command, CommandContext


class NewPluginCommand(Command):
    name = "newplugin"
    help = "create the skeleton of a new plugin package"
    description = (
        "Write a new plugin package: pyproject.toml with the signpeer entry point, src/signpeer_<name>/ with "
        "plugin.py (one hook) and a signer subclassing PlainSigner, a README and tests/test_plugin.py, one test "
        "on signpeer's shared fixtures that passes as it is. Refuses a target that exists and is not empty. "
        "Needs no data directory."
    )

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("plugin_name", metavar="name",
                            help="the plugin's name: lower-case letters, digits and hyphens (e.g. receipts); "
                                 "the package is signpeer-<name>")
        parser.add_argument("--dir", dest="target", type=Path, metavar="DIR",
                            help="the directory to write (default ./signpeer-<name>; made if missing)")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        from signpeer_core.pluginskeleton import PluginNames, write_skeleton  # its templates: when it runs

        target: Path = args.target or Path(PluginNames.of(args.plugin_name).distribution)
        names, written = write_skeleton(args.plugin_name, target)
        ctx.print(f"created {names.distribution} in {target}:")
        for path in written:
            ctx.print(f"  {path.relative_to(target)}")
        ctx.print(f"next: cd {target} && pip install -e '.[test]' && pytest")
        return 0


COMMANDS: list[type[Command]] = [NewPluginCommand]

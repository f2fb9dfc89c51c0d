"""``signpeer plugins``: the loaded plugins, their versions and what each registers."""

from __future__ import annotations

import argparse
import json

from signpeer_core.cli.base import Command, CommandContext


class PluginsCommand(Command):
    name = "plugins"
    help = "list the loaded plugins, their versions and what each registers"
    description = "Example: signpeer plugins --json"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        registry = ctx.registry
        registry.load_types()  # fills in the types each plugin registers
        registry.cli_commands()  # and the "commands"
        infos = sorted(registry.infos.values(), key=lambda i: i.name)
        if args.json:
            ctx.print(json.dumps([{"name": i.name, "distribution": i.distribution, "version": i.version,
                                   "registers": i.registers} for i in infos], indent=2))
            return 0
        for info in infos:
            ctx.print(f"{info.name}: {info.distribution} {info.version}")
            for kind, names in sorted(info.registers.items()):
                ctx.print(f"    {kind}: {', '.join(names)}")
        return 0

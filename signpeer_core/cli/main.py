"""Entry point of the ``signpeer`` command: builds the parser from every plugin's commands."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, NoReturn, TextIO

from signpeer_core import __version__
from signpeer_core.cli.base import USAGE_EXIT, CommandContext
from signpeer_core.errors import SignpeerError

if TYPE_CHECKING:
    from signpeer_core.plugins import Registry


class ArgumentParser(argparse.ArgumentParser):
    """argparse with SignServer's exit status for wrong usage (255 instead of 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE_EXIT, f"{self.prog}: error: {message}\n")


def strip_host_option(argv: list[str], warn: TextIO, parser: argparse.ArgumentParser | None = None) -> list[str]:
    """SignServer's AdminCLI takes ``-host <name>`` to reach another server; signpeer's admin
    commands act on the data directory (``--home``), so the option is removed with a warning, as
    SignServer's own CLI removes it where it does not apply. A command with a ``-host`` option of
    its own (``signdocument``) keeps it."""
    out = list(argv)
    if parser is not None and _takes_host(parser, out):
        return out
    for i, arg in enumerate(out):
        if arg == "-host" and i + 1 < len(out):
            warn.write(f"Warning: ignoring '-host {out[i + 1]}': signpeer commands use the data directory "
                       "(--home or SIGNPEER_HOME), not a host\n")
            del out[i:i + 2]
            break
    return out


def _takes_host(parser: argparse.ArgumentParser, argv: list[str]) -> bool:
    """Whether the sub-command named in ``argv`` has a ``-host`` option itself."""
    for action in parser._actions:  # argparse keeps its sub-parsers here; there is no public accessor
        if isinstance(action, argparse._SubParsersAction):
            for arg in argv:
                sub = action.choices.get(arg)
                if sub is not None:
                    return "-host" in sub._option_string_actions
    return False


def build_parser(commands: dict[str, type], registry: Registry | None = None) -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="signpeer",
        description="signpeer signing server: administration, server and client commands.",
    )
    parser.add_argument("--home", help="data directory (default: $SIGNPEER_HOME or ~/.signpeer)")
    parser.add_argument("--version", action="version", version=f"signpeer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in sorted(commands):
        cmd = commands[name](registry)
        p = sub.add_parser(name, help=cmd.help, description=cmd.description or cmd.help)
        p.add_argument("--home", dest="sub_home", help=argparse.SUPPRESS)
        cmd.configure(p)
        p.set_defaults(_command=cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    from signpeer_core.plugins import Registry

    try:
        registry = Registry(load_types=False)  # the types load when a command first needs them
        commands = registry.cli_commands()
    except SignpeerError as exc:
        print(f"signpeer: {exc.message}", file=sys.stderr)
        return exc.exit_code
    parser = build_parser(commands, registry)
    args = parser.parse_args(strip_host_option(sys.argv[1:] if argv is None else argv, sys.stderr, parser))
    if not getattr(args, "_command", None):
        parser.print_help()
        return USAGE_EXIT
    ctx = CommandContext(home=getattr(args, "sub_home", None) or args.home, registry=registry)
    try:
        return int(args._command.run(args, ctx) or 0)
    except SignpeerError as exc:
        ctx.error(f"signpeer {args.command}: {exc.message}")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main())

"""The base class of ``signpeer`` sub-commands, and the context they run in.

Commands are registered through the ``signpeer_cli_commands`` hook (the built-in ones too).
SignServer's single-dash options (``-keyalg``, ``-alias``) are plain argparse options.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, TextIO

from signpeer_core.settings import Settings, load_settings

if TYPE_CHECKING:
    from signpeer_core.plugins import Registry
    from signpeer_core.services import Services

#: SignServer AdminCLI's exit statuses: a failed command (its -2) and wrong usage (its -1).
FAILURE_EXIT = 254
USAGE_EXIT = 255


@dataclass
class CommandContext:
    """What a command gets: the data directory's settings, lazily opened services, streams."""

    home: str | None
    registry: Registry
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    _services: Services | None = None

    @property
    def settings(self) -> Settings:
        return load_settings(self.home)

    def services(self, load: bool = True) -> Services:
        """Open the database (and load the workers) on first use."""
        if self._services is None:
            from signpeer_core.services import Services

            settings = self.settings
            if not (settings.home / "signpeer.db").exists() and settings.database.startswith("sqlite:"):
                from signpeer_core.errors import ConfigurationError

                raise ConfigurationError(
                    f"no signpeer data directory at {settings.home}; create one with signpeer init "
                    f"(or point SIGNPEER_HOME / --home at an existing one)")
            self._services = Services.open(settings, registry=self.registry, load=load)
        return self._services

    def print(self, *args: object) -> None:
        print(*args, file=self.stdout)

    def error(self, *args: object) -> None:
        print(*args, file=self.stderr)

    def close(self) -> None:
        if self._services is not None:
            self._services.close()
            self._services = None


class Command:
    """One sub-command. Subclasses set ``name`` and ``help`` and implement ``run``.

    ``registry`` is the plugin registry the command line was built with (None in a parser
    built without one), for commands whose arguments come from other plugins' hooks.
    """

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry

    def configure(self, parser: argparse.ArgumentParser) -> None:
        """Add the command's arguments."""

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        raise NotImplementedError

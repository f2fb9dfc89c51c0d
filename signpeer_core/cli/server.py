"""signpeer commands (STUB: being written)."""

from __future__ import annotations

from signpeer_core.cli.base import Command

COMMANDS: list[type[Command]] = []

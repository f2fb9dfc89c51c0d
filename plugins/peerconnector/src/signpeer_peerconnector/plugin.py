"""The peerconnector plugin's hook implementations (thin: the logic lives beside this module)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from signpeer_core import hookimpl

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from signpeer_core.services import Services
    from signpeer_core.storage import MigrationSource


@hookimpl
def signpeer_routes(services: Services) -> list[BaseRoute]:
    """The peer endpoint under ``/signserver/peer/v1``."""
    from signpeer_peerconnector.routes import routes

    return routes(services)


@hookimpl
def signpeer_cli_commands() -> list[type]:
    """``wspeersystems``, ``peers`` and ``connector``."""
    from signpeer_peerconnector.cli import COMMANDS

    return list(COMMANDS)


@hookimpl
def signpeer_migrations() -> list[MigrationSource]:
    """The incoming peer connections registry's table."""
    from signpeer_peerconnector.incoming_store import migration_source

    return [migration_source()]

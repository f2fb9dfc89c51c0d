"""The peerconnector plugin's hook implementations (thin: the logic lives beside this module)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from signpeer_core.api import hookimpl

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from signpeer_core.api import MigrationSource, Services

SIGNPEER_API_VERSION = "1.1"


@hookimpl
def signpeer_add_hookspecs(pluginmanager: pluggy.PluginManager) -> None:
    """``signpeer_peer_routes`` and ``signpeer_connector_commands`` (see :mod:`.hookspecs`)."""
    from signpeer_peerconnector import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


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


@hookimpl
def signpeer_metrics(services: Services) -> list[object]:
    """The registry's size and ``PEERS_ISSUED`` per worker at scrape time (:mod:`.metrics`)."""
    from signpeer_peerconnector.incoming_store import IncomingPeers
    from signpeer_peerconnector.metrics import PeerStateCollector

    return [PeerStateCollector(services, IncomingPeers(services.store.database))]


@hookimpl
def signpeer_incoming_peers(services: Services) -> list[object]:
    """The incoming connections registry, for the Admin Web (see :mod:`.hookspecs`)."""
    from signpeer_peerconnector.incoming_store import IncomingPeers

    return [IncomingPeers(services.store.database)]

"""The signpeer plugin of signpeer-onetimecrypto: registration only (see the package docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from signpeer_core.api import hookimpl

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from signpeer_core.api import CAConnector, Command, MigrationSource, Services, Worker

SIGNPEER_API_VERSION = "1.5"


@hookimpl
def signpeer_worker_types() -> list[type[Worker]]:
    from signpeer_onetimecrypto.worker import OneTimeCryptoWorker

    return [OneTimeCryptoWorker]


@hookimpl
def signpeer_ca_connectors() -> list[type[CAConnector]]:
    from signpeer_onetimecrypto.connectors import LocalCAConnector, SelfSignedCAConnector
    from signpeer_onetimecrypto.ra import PeersRAConnector

    return [SelfSignedCAConnector, LocalCAConnector, PeersRAConnector]


@hookimpl
def signpeer_cli_commands() -> list[type[Command]]:
    from signpeer_onetimecrypto.commands import COMMANDS

    return list(COMMANDS)


# Hooks of the peer connector (optional: this plugin loads without it).
@hookimpl(optionalhook=True)
def signpeer_peer_routes(services: Services) -> list[BaseRoute]:
    """The RA operations under the peer endpoint and its guard (``/ra/claim``, ``/ra/requests/...``)."""
    from signpeer_onetimecrypto.routes import peer_routes

    return list(peer_routes(services))


@hookimpl(optionalhook=True)
def signpeer_connector_commands() -> list[type[Command]]:
    """``signpeer connector serve-ra``: the RA loop, as ``signpeer ra serve``."""
    from signpeer_onetimecrypto.commands import ServeRACommand

    return [ServeRACommand]


@hookimpl
def signpeer_migrations() -> list[MigrationSource]:
    """The RA queue's tables (requests for a CA peer, the CA peers that poll)."""
    from signpeer_onetimecrypto.raqueue import migration_source

    return [migration_source()]


@hookimpl
def signpeer_metrics(services: Services) -> list[object]:
    """The RA queue's depth per state, the oldest open request, polling CA peers (:mod:`.metrics`)."""
    from signpeer_onetimecrypto.metrics import RaQueueCollector
    from signpeer_onetimecrypto.raqueue import RaQueue

    return [RaQueueCollector(RaQueue(services.store.database))]

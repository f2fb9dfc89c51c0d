"""The signpeer plugin of signpeer-onetimecrypto: registration only (see the package docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from signpeer_core import hookimpl
from signpeer_onetimecrypto import routes as _routes

# The RA operations live under the peer endpoint and its guard: the peer connector collects
# extra operations when it builds its routes, which may happen before this plugin's hooks run,
# so they are registered when this module is imported (a no-op without the peer connector).
_routes.register()

if TYPE_CHECKING:
    from signpeer_core.storage import MigrationSource


@hookimpl
def signpeer_worker_types() -> list[type]:
    from signpeer_onetimecrypto.worker import OneTimeCryptoWorker

    return [OneTimeCryptoWorker]


@hookimpl
def signpeer_ca_connectors() -> list[type]:
    from signpeer_onetimecrypto.connectors import LocalCAConnector, SelfSignedCAConnector
    from signpeer_onetimecrypto.ra import PeersRAConnector

    return [SelfSignedCAConnector, LocalCAConnector, PeersRAConnector]


@hookimpl
def signpeer_cli_commands() -> list[type]:
    from signpeer_onetimecrypto.commands import COMMANDS

    return list(COMMANDS)


@hookimpl
def signpeer_migrations() -> list[MigrationSource]:
    """The RA queue's tables (requests for a CA peer, the CA peers that poll)."""
    from signpeer_onetimecrypto.raqueue import migration_source

    return [migration_source()]

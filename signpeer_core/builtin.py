"""signpeer-core's own plugin: the built-in workers, commands and routes, registered through
the same hooks a third-party plugin uses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from signpeer_core import hookimpl

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from signpeer_core.services import Services


@hookimpl
def signpeer_worker_types() -> list[type]:
    from signpeer_core.signers import CMSSigner, CryptoWorker, PlainSigner

    return [PlainSigner, CMSSigner, CryptoWorker]


@hookimpl
def signpeer_cli_commands() -> list[type]:
    from signpeer_core.cli import admin, legacyclients, newplugin, rules, server

    return [*admin.COMMANDS, *server.COMMANDS, *rules.COMMANDS, *legacyclients.COMMANDS, *newplugin.COMMANDS]


@hookimpl
def signpeer_routes(services: Services) -> list[BaseRoute]:
    from signpeer_core import metricsendpoint, processservlet, rest

    return rest.routes(services) + processservlet.routes(services) + metricsendpoint.routes(services)

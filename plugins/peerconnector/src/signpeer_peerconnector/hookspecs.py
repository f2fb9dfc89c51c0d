"""Hooks the peer connector declares for other plugins (added through ``signpeer_add_hookspecs``).

Implement them with ``@hookimpl(optionalhook=True)`` so that your plugin still loads when the
peer connector is not installed. ``plugins/peerconnector/README.md`` documents each with an
example.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from signpeer_core.api import hookspec

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from signpeer_core.api import Command, Services


@hookspec
def signpeer_peer_routes(services: Services) -> list[BaseRoute]:
    """Return Starlette routes to serve under the peer endpoint (``/signserver/peer/v1``).

    Paths are relative to the endpoint (``"/ra/claim"``). Every call passes the peer guard
    first: a TLS client certificate is required, the caller is recorded in the incoming
    connections registry, and only authorized Peer Systems (``PEERS_INCOMING_ENABLED`` and
    ``WSPEERS``) reach the endpoint (401/403 otherwise). The endpoint's docstring's first line
    becomes its summary in the endpoint's ``openapi.json``. Called once per server process.
    """


@hookspec
def signpeer_connector_commands() -> list[type[Command]]:
    """Return sub-commands of ``signpeer connector`` (the CA side), e.g. ``serve-ra``.

    Each class is a :class:`signpeer_core.api.Command`; its ``name`` becomes
    ``signpeer connector <name>``, ``configure(parser)`` adds its options and ``run(args, ctx)``
    runs it. Called once when the command line builds its parser.
    """

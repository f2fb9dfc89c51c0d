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
    from signpeer_peerconnector.incoming_store import IncomingPeers


@hookspec
def signpeer_peer_routes(services: Services) -> list[BaseRoute]:
    """Return Starlette routes to serve under the peer endpoint (``/signserver/peer/v1``).

    Paths are relative to the endpoint (``"/ra/claim"``). Every call passes the peer guard
    first: a TLS client certificate is required, the caller is recorded in the incoming
    connections registry, and only authorized Peer Systems (``PEERS_INCOMING_ENABLED`` and
    ``WSPEERS``) reach the endpoint (401/403 otherwise). The endpoint's docstring's first line
    becomes its summary in the endpoint's ``openapi.json``. Called once per server process.
    """
    raise NotImplementedError  # a specification: pluggy calls the implementations


@hookspec
def signpeer_connector_commands() -> list[type[Command]]:
    """Return sub-commands of ``signpeer connector`` (the CA side), e.g. ``serve-ra``.

    Each class is a :class:`signpeer_core.api.Command`; its ``name`` becomes
    ``signpeer connector <name>``, ``configure(parser)`` adds its options and ``run(args, ctx)``
    runs it. Called once when the command line builds its parser.
    """
    raise NotImplementedError  # a specification: pluggy calls the implementations


@hookspec
def signpeer_incoming_peers(services: Services) -> list[IncomingPeers]:
    """Return the incoming peer connections registry (implemented by the peer connector itself).

    For plugins that show or manage the registry (the Admin Web's "Incoming Connections"):
    ``registry.all()`` lists the rows (``id``, ``subject``, ``issuer`` (tokenized issuer DN),
    ``serial`` (lower-case hex), ``remote_address``, ``first_seen``, ``last_seen``, ``count``),
    ``registry.remove(id, audit=None)`` forgets one and says whether it was there (``audit(conn)``,
    e.g. ``lambda conn: services.store.write_audit(conn, [event])``, records who cleared it in the
    same transaction: event ``INCOMING_PEER_CLEARED``, module ``PEERS``). Call it as
    ``services.registry.collect("signpeer_incoming_peers", services=services)``: an empty list
    means the peer connector is not installed.
    """
    raise NotImplementedError  # a specification: pluggy calls the implementations

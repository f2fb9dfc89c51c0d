"""The Admin Web's hook implementations (thin: the work is in :mod:`signpeer_adminweb.pages`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from signpeer_core.api import hookimpl

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from signpeer_core.api import Services


@hookimpl
def signpeer_routes(services: Services) -> list[BaseRoute]:
    from signpeer_adminweb.pages import routes

    return routes(services)

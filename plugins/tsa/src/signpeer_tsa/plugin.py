"""The signpeer plugin of signpeer-tsa: registration only (see the package docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from signpeer_core.api import hookimpl

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from signpeer_core.api import Services, Worker

SIGNPEER_API_VERSION = "1.1"  # TimeStamper, sign_cms options (plugin API 1.1)


@hookimpl
def signpeer_worker_types() -> list[type[Worker]]:
    from signpeer_tsa.signer import TimeStampSigner

    return [TimeStampSigner]


@hookimpl
def signpeer_routes(services: Services) -> list[BaseRoute]:
    from signpeer_tsa.routes import routes

    return routes(services)

"""The REST signing interface (STUB: being written)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from signpeer_core.services import Services


def routes(services: Services) -> list[BaseRoute]:
    return []

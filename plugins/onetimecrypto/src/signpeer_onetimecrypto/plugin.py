"""The signpeer plugin of signpeer-onetimecrypto: registration only (see the package docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from signpeer_core import hookimpl

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from signpeer_core.services import Services


@hookimpl
def signpeer_worker_types() -> list[type]:
    from signpeer_onetimecrypto.worker import OneTimeCryptoWorker

    return [OneTimeCryptoWorker]


@hookimpl
def signpeer_ca_connectors() -> list[type]:
    from signpeer_onetimecrypto.connectors import LocalCAConnector, SelfSignedCAConnector

    return [SelfSignedCAConnector, LocalCAConnector]

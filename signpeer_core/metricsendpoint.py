"""``GET /metrics``: the Prometheus exposition of the server, behind the Auditor or Admin role.

The access rule: the scraper presents a TLS client certificate that is listed in ``WSAUDITORS``
(Auditor) or ``WSADMINS`` (Admin) — the same mutual TLS as every other administrative
endpoint, on the main port. Prometheus does this with ``scheme: https`` and ``tls_config``
(``cert_file``/``key_file``/``ca_file``); no second, unauthenticated listener is opened, so the
metrics (worker names, certificate expiry, queue depths) are never readable by anyone who can
reach the port. Without a certificate the answer is 401, with another certificate 403.

Any process of ``serve --workers N`` answers for all of them: the event metrics come from every
process's files (multiprocess mode, :mod:`signpeer_core.metrics`); the state metrics from this
process's memory and the database, all of them being loaded from the same configuration.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from signpeer_core.errors import AuthenticationError, AuthorizationError, NotFoundError
from signpeer_core.identity import CertificateIdentity
from signpeer_core.metrics import CONTENT_TYPE, Collector, MetricsRegistry
from signpeer_core.mtls import client_certificate
from signpeer_core.roles import ADMIN, AUDITOR, roles_of
from signpeer_core.workermetrics import WorkerStateCollector

if TYPE_CHECKING:
    from signpeer_core.services import Services

log = logging.getLogger("signpeer.metrics")

PATH = "/metrics"
#: The roles that may scrape.
SCRAPE_ROLES = frozenset({AUDITOR, ADMIN})


def metrics_registry(services: Services) -> MetricsRegistry:
    """This process's registry: made at the first scrape (plugins' collectors asked once)."""
    def make() -> MetricsRegistry:
        collectors: list[Collector] = [WorkerStateCollector(services.runtime)]
        collectors += services.registry.collect("signpeer_metrics", services=services)
        return MetricsRegistry(services, collectors)

    return services.state(MetricsRegistry, make)


def metrics_snapshot(services: Services) -> dict[str, list[tuple[dict[str, str], float]]]:
    """What a scrape of this process would say, as data (blocking; see :meth:`MetricsRegistry.snapshot`)."""
    return metrics_registry(services).snapshot()


class MetricsEndpoint:
    def __init__(self, services: Services) -> None:
        self.services = services

    def _authorize(self, request: Request) -> None:
        cert = client_certificate(request.scope)
        if cert is None:
            raise AuthenticationError(
                "/metrics needs a TLS client certificate with the Auditor or Admin role; give Prometheus one "
                "(tls_config cert_file/key_file) and add it with signpeer wsauditors -add -cert <file>")
        rule = CertificateIdentity.from_certificate(cert).rule
        settings = self.services.settings
        if not roles_of(rule, self.services.runtime.global_properties, settings.node_id) & SCRAPE_ROLES:
            log.warning("denied /metrics: serial %s, issuer %s", rule.serial_hex, rule.issuer_dn)
            raise AuthorizationError(
                f"client certificate (serial {rule.serial_hex}, issuer {rule.issuer_dn}) may not read /metrics: "
                f"it needs the Auditor or Admin role (signpeer wsauditors -add -cert <file>, then signpeer reload)")

    async def metrics(self, request: Request) -> Response:
        if not self.services.settings.metrics:
            raise NotFoundError("metrics are off on this server (metrics = false in signpeer.toml)")
        self._authorize(request)
        if self.services.metrics is not None:
            self.services.metrics.flush()  # this process's last second (on the loop, as the requests)
        registry = metrics_registry(self.services)
        body = await anyio.to_thread.run_sync(registry.render)
        return Response(body, media_type=CONTENT_TYPE)


def routes(services: Services) -> list[BaseRoute]:
    return [Route(PATH, MetricsEndpoint(services).metrics, methods=["GET"])]

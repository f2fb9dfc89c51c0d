"""The peer endpoint's metrics: calls per operation and outcome, refused peers, renewals, the
incoming connections registry's size and which workers the CA issued (``PEERS_ISSUED``).

Labels are the operation (a route's name), the outcome and configured worker names: never a
peer's serial or subject, which any client could vary (``docs/monitoring.md``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from signpeer_core.api import (
    GaugeMetricFamily,
    is_true,
    metrics_counter,
    metrics_gauge,
    status_outcome,
)
from signpeer_peerconnector.protocol import PEERS_ISSUED

if TYPE_CHECKING:
    from signpeer_core.api import Services
    from signpeer_peerconnector.incoming_store import IncomingPeers

calls = metrics_counter("signpeer_peer_calls", "Calls of the peer endpoint by operation and outcome",
                        ("operation", "outcome"))
refused = metrics_counter("signpeer_peer_refused", "Peer calls refused: no client certificate (unauthenticated) "
                          "or a certificate not authorized as a Peer System (unauthorized)", ("reason",))
renewals = metrics_counter("signpeer_peer_renewals", "Certificates the CA installed through the peer endpoint, by "
                           "worker and outcome", ("worker", "outcome"))
last_renewal = metrics_gauge("signpeer_peer_last_renewal_timestamp_seconds",
                             "When the CA last installed a certificate for the worker, by outcome",
                             ("worker", "outcome"), mode="max")

_calls: dict[tuple[str, int], Any] = {}


def count_call(operation: str, status: int) -> None:
    child = _calls.get((operation, status))
    if child is None:
        child = _calls[(operation, status)] = calls.labels(operation, status_outcome(status))
    child.inc()


def renewal_done(worker: str, success: bool) -> None:
    outcome = "success" if success else "failed"
    renewals.labels(worker, outcome).inc()
    last_renewal.labels(worker, outcome).set(time.time())


class PeerStateCollector:
    """At scrape time: the registry's size and the workers whose certificate the CA issued."""

    def __init__(self, services: Services, registry: IncomingPeers) -> None:
        self.services = services
        self.registry = registry

    def collect(self) -> Iterable[Any]:
        size = GaugeMetricFamily("signpeer_peer_incoming_connections",
                                 "Rows of the incoming peer connections registry")
        size.add_metric([], float(self.registry.count()))
        issued = GaugeMetricFamily("signpeer_worker_peers_issued",
                                   "1 for each worker whose certificate a CA peer installed (PEERS_ISSUED=true; "
                                   "others absent)", labels=["worker"])
        for worker in self.services.runtime.workers():
            if is_true(worker.config.get(PEERS_ISSUED)):
                issued.add_metric([worker.name], 1.0)
        return [size, issued]

"""One-time keys' metrics: keys made and destroyed, the cycle's stage durations, the key pool's
fill level, CA timeouts, requests shed; the RA queue's depth, waits and polling CA peers.

Event metrics are recorded where the events happen (:mod:`.keysource`, :mod:`.worker`,
:mod:`.raqueue`); the queue's state is read from the database at scrape time
(:class:`RaQueueCollector`). Labels: a stage, a state, a configured worker name.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from signpeer_core.api import GaugeMetricFamily, metrics_counter, metrics_gauge, metrics_histogram

if TYPE_CHECKING:
    from signpeer_onetimecrypto.raqueue import RaQueue

keys_generated = metrics_counter("signpeer_onetime_keys_generated", "One-time keys generated (pool included)")
keys_destroyed = metrics_counter("signpeer_onetime_keys_destroyed", "One-time keys destroyed; in the long run "
                                 "equal to generated minus the pooled and in-flight ones")
stage_seconds = metrics_histogram("signpeer_onetime_stage_duration_seconds",
                                  "The one-time cycle's stages: keygen, csr, ca (certificate from the CA "
                                  "connector), delete", ("stage",))
pool_keys = metrics_gauge("signpeer_onetime_keypool_keys", "Keys waiting in the worker's key pool (all processes)",
                          ("worker",))
pool_size = metrics_gauge("signpeer_onetime_keypool_size", "The key pool's capacity (KEYPOOL_SIZE, all processes)",
                          ("worker",))
ca_timeouts = metrics_counter("signpeer_onetime_ca_timeouts", "Signing requests whose certificate did not come "
                              "within the CA connector's wait time", ("worker",))
shed_requests = metrics_counter("signpeer_onetime_shed_requests", "Signing requests answered 503 at once because "
                                "the worker had MAX_WAITING requests in its cycle in the process", ("worker",))
ra_claim_wait = metrics_histogram("signpeer_onetime_ra_queued_seconds", "RA requests: from queued to claimed by a CA",
                                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))
ra_answer_wait = metrics_histogram("signpeer_onetime_ra_claimed_seconds", "RA requests: from claimed to answered",
                                   buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))

STAGES = {stage: stage_seconds.labels(stage) for stage in ("keygen", "csr", "ca", "delete")}
STATES = ("pending", "claimed", "answered", "expired")
#: A CA peer that polled within this many seconds counts as polling.
POLLING_WINDOW = 60.0


class RaQueueCollector:
    """At scrape time: requests per (effective) state, the oldest open request's age, polling CA peers."""

    def __init__(self, queue: RaQueue) -> None:
        self.queue = queue

    def collect(self) -> Iterable[Any]:
        now = time.time()
        depth = GaugeMetricFamily("signpeer_onetime_ra_requests", "RA requests in the queue by state "
                                  "(expired: past the deadline, answered and expired until purged)", labels=["state"])
        counts, oldest = self.queue.depth(now)
        for state in STATES:
            depth.add_metric([state], float(counts.get(state, 0)))
        age = GaugeMetricFamily("signpeer_onetime_ra_oldest_open_age_seconds",
                                "Age of the oldest pending or claimed RA request (0 when none)")
        age.add_metric([], now - oldest if oldest is not None else 0.0)
        pollers = self.queue.pollers()
        polling = GaugeMetricFamily("signpeer_onetime_ra_polling_peers",
                                    f"CA peers that collected RA requests in the last {POLLING_WINDOW:.0f} s")
        polling.add_metric([], float(sum(1 for p in pollers if now - p.last_poll <= POLLING_WINDOW)))
        last = GaugeMetricFamily("signpeer_onetime_ra_last_poll_timestamp_seconds",
                                 "When a CA peer last collected RA requests (0: never)")
        last.add_metric([], max((p.last_poll for p in pollers), default=0.0))
        return [depth, age, polling, last]

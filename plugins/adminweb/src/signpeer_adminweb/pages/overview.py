"""The Overview page: workers by status, signer certificates by expiry with the CA's renewals,
the RA queue, and the signing rate of the last hour.

Drawn from the same figures as ``/metrics`` (:func:`signpeer_core.api.metrics_snapshot`: the
state collectors of the core and the plugins, and the signing counters of every process), so
that what the page shows and what Prometheus scrapes agree. Charts are server-side SVG (the
Admin Web's content security policy allows no script).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import anyio.from_thread
from starlette.responses import Response

from signpeer_adminweb.signinghistory import SigningHistory
from signpeer_adminweb.web import AdminWeb, Ctx
from signpeer_core.api import metrics_snapshot

DAY = 86400.0
#: The expiry timeline shows this many days ahead; later certificates are drawn at its end.
HORIZON_DAYS = 400
#: Certificates ending within this many days are flagged.
SOON_DAYS = 30


@dataclass
class Expiry:
    worker: str
    not_after: float
    days: float
    peers_issued: bool
    renewed: float | None  #: when the CA last installed a certificate (this server's metrics)
    renewal_failed: float | None

    @property
    def soon(self) -> bool:
        return self.days < SOON_DAYS

    @property
    def date(self) -> str:
        return dt.datetime.fromtimestamp(self.not_after, dt.UTC).strftime("%Y-%m-%d")


def _by_worker(snapshot: dict, name: str, **match: str) -> dict[str, float]:
    return {labels["worker"]: value for labels, value in snapshot.get(name, [])
            if all(labels.get(k) == v for k, v in match.items())}


def overview(web: AdminWeb, ctx: Ctx) -> Response:
    services = web.services
    if services.metrics is not None:
        # The last second's requests are still sums on the event loop: move them first, there
        # (pages run in a worker thread), as /metrics does.
        anyio.from_thread.run_sync(services.metrics.flush)
    snapshot = metrics_snapshot(services)
    now = time.time()
    active = [(labels["worker"], labels["reason"], value) for labels, value in snapshot.get("signpeer_worker_active", [])]
    disabled = set(_by_worker(snapshot, "signpeer_worker_disabled"))
    counts = {"ACTIVE": sum(1 for _, _, v in active if v == 1),
              "OFFLINE": sum(1 for w, _, v in active if v == 0 and w not in disabled),
              "DISABLED": len(disabled)}
    offline = sorted((w, r) for w, r, v in active if v == 0 and w not in disabled)

    issued = _by_worker(snapshot, "signpeer_worker_peers_issued")
    renewed = _by_worker(snapshot, "signpeer_peer_last_renewal_timestamp_seconds", outcome="success")
    failed = _by_worker(snapshot, "signpeer_peer_last_renewal_timestamp_seconds", outcome="failed")
    expiries = sorted((Expiry(w, t, (t - now) / DAY, w in issued, renewed.get(w), failed.get(w))
                       for w, t in _by_worker(snapshot, "signpeer_signer_certificate_not_after_seconds").items()),
                      key=lambda e: e.not_after)

    ra = {labels["state"]: int(v) for labels, v in snapshot.get("signpeer_onetime_ra_requests", [])}
    ra_extra = {name: value for name in ("signpeer_onetime_ra_oldest_open_age_seconds",
                                         "signpeer_onetime_ra_polling_peers",
                                         "signpeer_onetime_ra_last_poll_timestamp_seconds")
                for labels, value in snapshot.get(name, [])}

    history = services.state(SigningHistory, lambda: SigningHistory(services))
    minutes = history.minutes(history.sample() if services.metrics is not None else None)
    peak = max((m.success + m.failed for m in minutes), default=0.0)
    return web.render(ctx, "overview.html", active="overview", title="Overview", counts=counts, offline=offline,
                      expiries=expiries, horizon=HORIZON_DAYS, soon_days=SOON_DAYS, ra=ra, ra_extra=ra_extra,
                      ra_present="signpeer_onetime_ra_requests" in snapshot, minutes=minutes, peak=peak,
                      metrics_on=services.metrics is not None, now=now,
                      total_hour=sum(m.success for m in minutes), failed_hour=sum(m.failed for m in minutes))

"""Audit records of refused access: who was turned away, from what, and why — rate-limited.

Refusals are written to the audit log (event ``ACCESS_CONTROL``, outcome ``FAILURE``, CESeCore's
name for an authorization check) by every surface that refuses a caller: the Admin Web, the admin
REST endpoints, the peer endpoint, and TLS handshakes with a refused client certificate
(:mod:`.tlsrefusals`, whose server log line is rate-limited too). A client
retrying in a loop must not turn into a stream of database writes: one record per caller and
resource a minute (:data:`INTERVAL`), the next one saying how many were left out
(``REPEATED``). The same refusal always goes to the server log (``signpeer.security``). A failed
audit write (a read-only data directory) is logged and never turns the refusal into an error.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from signpeer_core.audit import Admin, AuditEvent

if TYPE_CHECKING:
    from signpeer_core.services import Services

log = logging.getLogger("signpeer.security")

ACCESS_CONTROL = "ACCESS_CONTROL"
#: Seconds between two audit records of the same refusal (caller, surface, resource).
INTERVAL = 60.0
_MAX_KEYS = 10_000


class RefusalLog:
    """The rate-limited refusal records of one process (``services.state(RefusalLog, ...)``)."""

    def __init__(self, services: Services, interval: float = INTERVAL) -> None:
        self.services = services
        self.interval = interval
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, ...], tuple[float, int]] = {}

    def _due(self, key: tuple[str, ...]) -> int | None:
        """None when this refusal was recorded less than ``interval`` ago; else how many were left out."""
        now = time.monotonic()
        with self._lock:
            last, skipped = self._seen.get(key, (None, 0))
            if last is not None and now - last < self.interval:
                self._seen[key] = (last, skipped + 1)
                return None
            if len(self._seen) >= _MAX_KEYS:
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.interval}
            self._seen[key] = (now, 0)
            return skipped

    def record(self, module: str, admin: Admin, resource: str, reason: str, remote: str = "",
               worker_id: int | None = None, event: str = ACCESS_CONTROL, log_every_time: bool = True) -> None:
        """Log a refusal; write its audit record unless the same one was written within the interval.
        ``log_every_time=False``: the server log line is rate-limited too (TLS handshakes)."""
        skipped = self._due((event, module, admin.name, admin.issuer or "", admin.serial or "", resource))
        if log_every_time or skipped is not None:
            log.warning("refused %s access to %s for '%s' (issuer '%s', serial %s) from %s: %s", module, resource,
                        admin.name, admin.issuer or "", admin.serial or "", remote or "?", reason)
        if skipped is None:
            return
        details = {"RESOURCE": resource, "REASON": reason}
        if remote:
            details["REMOTE_ADDRESS"] = remote
        if skipped:
            details["REPEATED"] = f"{skipped} more since the last record"
        try:
            self.services.store.audit(AuditEvent(event, module, admin, worker_id, details, outcome="FAILURE"))
        except Exception as exc:  # never let the audit write turn a refusal into a 500
            log.error("cannot write the audit record of a refusal: %s", exc)


def record_refusal(services: Services, module: str, admin: Admin, resource: str, reason: str, remote: str = "",
                   worker_id: int | None = None) -> None:
    """Record a refused access (see the module docstring); blocking: call it from a thread in async code."""
    services.state(RefusalLog, lambda: RefusalLog(services)).record(module, admin, resource, reason, remote,
                                                                     worker_id)

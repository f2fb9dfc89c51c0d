"""The PKCS#11 token's metrics: open sessions, reconnections, retried operations (per worker)."""

from __future__ import annotations

from signpeer_core.api import metrics_counter, metrics_gauge

sessions = metrics_gauge("signpeer_pkcs11_sessions", "Open PKCS#11 sessions of the worker's token (all processes)",
                         ("worker",))
reconnects = metrics_counter("signpeer_pkcs11_reconnects", "Sessions reopened after the token or the session was "
                             "lost, by outcome", ("worker", "outcome"))
retries = metrics_counter("signpeer_pkcs11_retries", "Operations retried once on a new session after a lost one",
                          ("worker",))

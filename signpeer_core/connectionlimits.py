"""The connection limits of one server process (:class:`Limits`), its counts and rate-limited
warnings (:class:`ConnectionGuard`, one per process: :func:`install`, :func:`current`), and the
open-file limit.

:func:`raise_open_file_limit` raises the soft ``RLIMIT_NOFILE`` to the hard limit at start, and
:func:`effective_max_connections` keeps ``max_connections`` below what the open-file limit allows.
The gate that applies the limits to each connection is :mod:`signpeer_core.connections`.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from signpeer_core.memorytrim import MemoryTrimmer

log = logging.getLogger("signpeer.connections")

#: Seconds between two warnings of the same kind.
WARN_INTERVAL = 10.0
#: File descriptors kept free for everything but client connections (database, logs, keystores, HSM).
FD_RESERVE = 256


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft open-file limit to the hard one where allowed; returns (soft, hard) after."""
    try:
        import resource
    except ImportError:  # not on this platform
        return (0, 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %s to %s: %s", soft, wanted, exc)
    return soft, hard


def effective_max_connections(configured: int, workers: int = 1) -> int:
    """``configured`` (0: as many as the open-file limit allows), capped so that the connections of
    every process stay :data:`FD_RESERVE` below the limit."""
    soft, _ = raise_open_file_limit()
    allowed = max(16, (soft - FD_RESERVE) // max(1, workers)) if soft > 0 else configured or 1024
    if configured <= 0:
        return allowed
    if configured > allowed:
        log.warning("max_connections=%s is over what the open-file limit (%s) allows for %s process(es); "
                    "using %s (raise the limit with ulimit -n or LimitNOFILE=)", configured, soft, workers, allowed)
        return allowed
    return configured


@dataclass
class Limits:
    """The limits of one server process (see the module docstring; ``docs/security.md``)."""

    max_connections: int = 4096
    max_connections_per_address: int = 512
    tls_handshake_timeout: float = 10.0
    header_timeout: float = 10.0
    body_timeout: float = 60.0


@dataclass
class ConnectionGuard:
    """The connections of one server process: counts, the TLS context, rate-limited warnings."""

    limits: Limits
    ssl_context: ssl.SSLContext | None
    #: The same TLS settings as ``ssl_context`` without its handshake watch
    #: (:mod:`signpeer_core.tlsrefusals`): a connection moves to it once its handshake is done, so
    #: that OpenSSL no longer calls the watch (a Python call) for every TLS record it reads or
    #: writes. None: the connection keeps ``ssl_context``.
    established_context: ssl.SSLContext | None = None
    open: int = 0
    by_address: Counter[str] = field(default_factory=Counter)
    trimmer: MemoryTrimmer = field(default_factory=lambda: MemoryTrimmer())
    _warned: dict[str, float] = field(default_factory=dict)
    _suppressed: Counter[str] = field(default_factory=Counter)

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address``; or the reason it is refused."""
        limits = self.limits
        if limits.max_connections > 0 and self.open >= limits.max_connections:
            return f"{self.open} open connections (max_connections={limits.max_connections})"
        per = limits.max_connections_per_address
        if per > 0 and self.by_address[address] >= per:
            return f"{self.by_address[address]} open connections from {address} (max_connections_per_address={per})"
        self.open += 1
        self.by_address[address] += 1
        return None

    def release(self, address: str) -> None:
        self.open -= 1
        left = self.by_address[address] - 1
        if left > 0:
            self.by_address[address] = left
        else:
            del self.by_address[address]

    def warn(self, kind: str, message: str, *args: Any) -> None:
        """Log ``message`` as a warning at most once per :data:`WARN_INTERVAL` per ``kind``."""
        now = time.monotonic()
        if now - self._warned.get(kind, -WARN_INTERVAL) < WARN_INTERVAL:
            self._suppressed[kind] += 1
            return
        self._warned[kind] = now
        more = self._suppressed.pop(kind, 0)
        log.warning(message + (f" ({more} more since the last warning of this kind)" if more else ""), *args)


_guard: ConnectionGuard | None = None


def install(limits: Limits, ssl_context: ssl.SSLContext | None,
            established_context: ssl.SSLContext | None = None) -> ConnectionGuard:
    """Set the guard of this process (``signpeer serve`` and each process it starts call this once)."""
    global _guard
    _guard = ConnectionGuard(limits, ssl_context, established_context)
    return _guard


def current() -> ConnectionGuard:
    if _guard is None:
        raise RuntimeError("signpeer_core.connectionlimits.install() was not called in this process")
    return _guard

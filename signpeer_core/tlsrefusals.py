"""TLS handshakes refused for a client certificate: in the server log and the audit log.

A client whose certificate the server does not trust (another CA, expired, ...) never reaches the
application: the TLS layer answers with an alert and closes, and asyncio and uvloop say nothing
about it outside debug mode, so the client sees EOF and the administrator sees nothing. This
module watches the handshake through OpenSSL's message callback, set on the server's
``SSLContext`` (CPython's ``SSLContext._msg_callback``, the hook its own tests use): it keeps the
leaf certificate a client sends (its Certificate message) until the handshake ends, and when the
server answers it with a certificate alert (``unknown_ca``, ``certificate_expired``, ...) reports
the refusal with that certificate's subject, issuer and serial.

The callback runs on the event loop inside the TLS layer, so it does almost nothing there: a
refusal is written (server log and audit record ``ACCESS_CONTROL``, module ``TLS``) at most once
a minute per certificate (:mod:`.refusals`), by one background thread, and a flood of different
certificates is cut off after :data:`MAX_QUEUED` waiting records.
"""

from __future__ import annotations

import concurrent.futures
import logging
import ssl
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from signpeer_core.services import Services

log = logging.getLogger("signpeer.security")

_HANDSHAKE, _ALERT = 22, 21
_CLIENT_HELLO, _CERTIFICATE = 1, 11
_FATAL = 2
#: The alerts a server sends when it refuses the client's certificate.
CERTIFICATE_ALERTS = {42: "bad_certificate", 43: "unsupported_certificate", 44: "certificate_revoked",
                      45: "certificate_expired", 46: "certificate_unknown", 48: "unknown_ca", 49: "access_denied",
                      51: "decrypt_error", 116: "certificate_required"}
_MAX_PENDING = 4096
MAX_QUEUED = 100

_services: Services | None = None


def serving(services: Services) -> None:
    """Name the services of this server process (the app does it when it is built)."""
    global _services
    _services = services


def _leaf_der(data: bytes, tls13: bool) -> bytes | None:
    """The first certificate of a Certificate handshake message (header included)."""
    p = 4
    if tls13:
        p += 1 + data[p]  # certificate_request_context
    p += 3  # length of the list
    if len(data) < p + 3:
        return None
    length = int.from_bytes(data[p:p + 3], "big")
    der = data[p + 3:p + 3 + length]
    return der if len(der) == length and length else None


class RefusalWatch:
    """The message callback of one ``SSLContext`` and the reports it makes."""

    def __init__(self) -> None:
        self._pending: OrderedDict[int, bytes] = OrderedDict()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tls-refusals")
        self._queued = 0
        self._lock = threading.Lock()

    def install(self, context: ssl.SSLContext) -> None:
        """Watch the handshakes of ``context``'s connections.

        OpenSSL calls the callback for every TLS record, also after the handshake (each record's
        header), so it must be cheap. ``ssl.SSLContext._msg_callback``'s setter wraps the
        callback in a function that makes three enums per call (about a twentieth of a kept-alive
        signing request's CPU); the callback is set on the C context's own slot when there is
        one, and takes the plain integers OpenSSL gives. The connection gate moves a connection
        whose handshake is done to a twin context without the callback
        (:attr:`ConnectionGuard.established_context <signpeer_core.connectionlimits.ConnectionGuard.established_context>`),
        so requests on kept-alive connections do not call it at all.
        """
        raw = getattr(ssl, "_ssl", None)
        slot = getattr(getattr(raw, "_SSLContext", None), "_msg_callback", None)
        if slot is not None and hasattr(slot, "__set__"):
            slot.__set__(context, self.callback)
        else:  # pragma: no cover  (another Python implementation)
            context._msg_callback = self.callback  # type: ignore[attr-defined]  # CPython's private hook, see the module doc

    def callback(self, conn: Any, direction: str, version: Any, content_type: Any, msg_type: Any,
                 data: bytes) -> None:
        if content_type != _HANDSHAKE and content_type != _ALERT:  # every record's header: nothing to watch
            return
        try:
            key = id(conn)
            if direction == "read" and content_type == _HANDSHAKE:
                if msg_type == _CLIENT_HELLO:
                    self._pending.pop(key, None)
                elif msg_type == _CERTIFICATE:
                    der = _leaf_der(data, version == ssl.TLSVersion.TLSv1_3)
                    if der is not None:
                        self._pending[key] = der
                        while len(self._pending) > _MAX_PENDING:
                            self._pending.popitem(last=False)
            elif direction == "write" and content_type == _ALERT and len(data) >= 2 and data[0] == _FATAL:
                der = self._pending.pop(key, None)
                reason = CERTIFICATE_ALERTS.get(data[1])
                if der is not None and reason is not None:
                    self._submit(reason, der)
        except Exception:  # never break a handshake for a report
            log.debug("watching a TLS handshake failed", exc_info=True)

    def _submit(self, reason: str, der: bytes) -> None:
        with self._lock:
            if self._queued >= MAX_QUEUED:
                return
            self._queued += 1
        self._executor.submit(self._report, reason, der)

    def _report(self, reason: str, der: bytes) -> None:
        try:
            from cryptography import x509

            from signpeer_core.audit import Admin
            from signpeer_core.identity import CertificateIdentity
            from signpeer_core.refusals import RefusalLog

            try:
                admin = CertificateIdentity.from_certificate(x509.load_der_x509_certificate(der)).as_admin()
            except ValueError:
                admin = Admin("unreadable client certificate")
            services = _services
            if services is None:
                log.warning("refused TLS client certificate '%s' (issuer '%s', serial %s): %s", admin.name,
                            admin.issuer or "", admin.serial or "", reason)
                return
            refusals = services.state(RefusalLog, lambda: RefusalLog(services))
            refusals.record("TLS", admin, "TLS handshake", f"client certificate refused: {reason}",
                            log_every_time=False)
        except Exception:
            log.exception("reporting a refused TLS client certificate failed")
        finally:
            with self._lock:
                self._queued -= 1


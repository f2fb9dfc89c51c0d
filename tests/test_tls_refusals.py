"""A TLS client certificate the server refuses is in the server log and the audit log, rate-limited
(issue 11, item 22): before, such a client got EOF and the administrator saw nothing."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from signpeer_core.identity import CertificateIdentity
from signpeer_core.testing import ServerProcess, open_services, wait_until
from signpeer_core.testing.pki import make_pki


def handshake(server: ServerProcess, ca: Path, cert: tuple[str, str]) -> str:
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(*cert)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /healthcheck HTTP/1.1\r\nHost: localhost\r\n\r\n")
            return tls.recv(100).decode(errors="replace") or "EOF"
    except (ssl.SSLError, OSError) as exc:
        return type(exc).__name__


def test_a_refused_client_certificate_is_logged_and_audited_once_a_minute(
        home: Path, pki: Any, tmp_path: Path, start_server: Callable[..., ServerProcess]) -> None:
    other = make_pki(tmp_path / "other")  # a CA the server does not trust (same names as the trusted one)
    stranger = other.client
    server = start_server(home)
    for _ in range(3):
        assert not handshake(server, pki.ca_pem, stranger.pair).startswith("HTTP/1.1 200")
    assert handshake(server, pki.ca_pem, pki.client.pair).startswith("HTTP/1.1")  # a trusted one passes

    def refused() -> list[Any]:
        services = open_services(home)
        try:
            return [e for e in services.store.audit_events(event="ACCESS_CONTROL") if e.module == "TLS"]
        finally:
            services.close()

    records = wait_until(refused, timeout=30, what="the audit record of the refused handshake")
    assert len(records) == 1, [(r.admin.name, r.details) for r in records]
    record = records[0]
    identity = CertificateIdentity.from_certificate(other.client.cert)
    assert (record.admin.name, record.admin.issuer, record.admin.serial) == (
        identity.subject, identity.issuer, identity.serial_hex)
    assert record.details["REASON"] == "client certificate refused: unknown_ca"
    lines = [line for line in server.log().splitlines() if "refused TLS access" in line]
    assert len(lines) == 1 and "unknown_ca" in lines[0], server.log()

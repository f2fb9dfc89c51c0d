"""TLS client certificates under uvicorn: protocol subclasses that put them into the ASGI scope.

uvicorn 0.54 terminates TLS but gives the application nothing about it: no
``scope["extensions"]["tls"]``, no transport. Workers with ``AUTHTYPE=CLIENTCERT`` and the
admin endpoints must know *who* connected, so :class:`MTLSHttpToolsProtocol` and
:class:`MTLSH11Protocol` read the peer certificate once per connection in ``connection_made``
(asyncio and uvloop call it after the handshake) and wrap ``self.app`` for that connection so
every request scope gets the ASGI TLS extension::

    scope["extensions"]["tls"] = {
        "client_cert_chain": [PEM, ...],   # leaf first; only the leaf before Python 3.13
        "client_cert_der": bytes | None,   # non-standard: the leaf as DER, cheap to parse
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": 0x0304,             # as in the ASGI TLS extension
        "cipher_suite": None,
        "server_cert": None,
    }

These classes use uvicorn internals (``self.app``, ``connection_made``), which is why
pyproject.toml pins uvicorn's minor version and ``tests/test_rest_mtls.py`` checks, through a
real TLS connection, the identity the app sees.

:func:`client_certificate` parses the leaf once per connection: the parsed object is cached in
the (per-connection) TLS dict, so keep-alive requests do not pay for X.509 parsing again.
"""

from __future__ import annotations

import ssl
from collections.abc import MutableMapping
from typing import Any

import uvicorn
from cryptography import x509
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from signpeer_core.connections import GatedProtocol

#: ASGI TLS extension values for ``ssl_object.version()``.
_TLS_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}

#: Private key of the cached parsed certificate inside the per-connection TLS dict.
_PARSED = "_signpeer_parsed_cert"


def tls_info(transport: Any) -> dict[str, Any] | None:
    """The ASGI TLS extension dict for a transport, or None on plain TCP."""
    ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der: bytes | None = ssl_object.getpeercert(binary_form=True)
    chain_pem: list[str] = []
    verified = getattr(ssl_object, "get_verified_chain", None)  # Python 3.13+
    if der is not None:
        if verified is not None:
            try:
                # 3.13 returns DER bytes (or _ssl.Certificate objects in some builds).
                chain_pem = [ssl.DER_cert_to_PEM_cert(c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]  # _ssl: not in typeshed
                             for c in verified()]
            except Exception:  # fall back to the leaf; the chain is informational
                chain_pem = []
        if not chain_pem:
            chain_pem = [ssl.DER_cert_to_PEM_cert(der)]
    cipher = ssl_object.cipher()
    return {
        "server_cert": None,
        "client_cert_chain": chain_pem,
        "client_cert_der": der,
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
        "cipher_name": cipher[0] if cipher else None,
    }


class _TLSApp:
    """The real app, with this connection's TLS dict added to each request scope."""

    __slots__ = ("app", "tls")

    def __init__(self, app: Any, tls: dict[str, Any]) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        extensions = scope.get("extensions")
        if extensions is None:
            scope["extensions"] = {"tls": self.tls}
        else:
            extensions["tls"] = self.tls
        await self.app(scope, receive, send)


def _wrap(protocol: Any, transport: Any) -> None:
    tls = tls_info(transport)
    if tls is not None:
        protocol.app = _TLSApp(protocol.app, tls)


class MTLSHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the client certificate in every request scope."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        _wrap(self, transport)


class MTLSH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with the client certificate in every request scope."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        _wrap(self, transport)


class GatedHttpToolsProtocol(GatedProtocol):
    """:class:`MTLSHttpToolsProtocol` behind the connection gate (TLS, limits, timeouts)."""

    inner_class = MTLSHttpToolsProtocol


class GatedH11Protocol(GatedProtocol):
    """:class:`MTLSH11Protocol` behind the connection gate (TLS, limits, timeouts)."""

    inner_class = MTLSH11Protocol


def protocol_class(http: str = "auto", gate: bool = False) -> type:
    """The protocol class for uvicorn's ``http`` setting (auto: httptools when installed);
    ``gate``: behind :class:`~signpeer_core.connections.GatedProtocol`, which does TLS itself."""
    if http == "h11":
        return GatedH11Protocol if gate else MTLSH11Protocol
    return GatedHttpToolsProtocol if gate else MTLSHttpToolsProtocol


def client_certificate(scope: MutableMapping[str, Any]) -> x509.Certificate | None:
    """The verified TLS client certificate of the request's connection, or None.

    The server asks for client certificates with CERT_OPTIONAL and the CA files of
    ``--client-cafile``: a certificate that reaches this point has passed chain verification in
    the handshake. Parsed once per connection and cached in the connection's TLS dict.
    """
    tls = scope.get("extensions", {}).get("tls") if "extensions" in scope else None
    if not tls:
        return None
    cached = tls.get(_PARSED)
    if cached is not None:
        return cached
    der = tls.get("client_cert_der")
    if der is None:
        chain = tls.get("client_cert_chain") or []
        if not chain:
            return None
        cert = x509.load_pem_x509_certificate(chain[0].encode())
    else:
        cert = x509.load_der_x509_certificate(der)
    tls[_PARSED] = cert
    return cert


class WatchingConfig(uvicorn.Config):
    """uvicorn's ``Config`` whose TLS context reports refused client certificates
    (:mod:`signpeer_core.tlsrefusals`). At module level: ``serve --workers N`` pickles it into
    each process, which loads it there."""

    def load(self) -> None:
        super().load()
        if self.ssl is not None:
            from signpeer_core.tlsrefusals import RefusalWatch

            RefusalWatch().install(self.ssl)

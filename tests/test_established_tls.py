"""The connection gate moves a connection whose TLS handshake is done to the twin context without
the refusal watch (``ConnectionGuard.established_context``): OpenSSL calls the watch for the
handshake's records only, not for every record of every request on a kept-alive connection, and the
connection keeps its verified client certificate."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from signpeer_core import connectionlimits
from signpeer_core.connections import GatedProtocol
from signpeer_core.testing.pki import PKI


def server_context(pki: PKI) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*pki.server.pair)
    context.load_verify_locations(cafile=str(pki.ca_pem))
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


class Upper(asyncio.Protocol):
    """The protocol behind the gate: answers each read in capitals and notes the peer certificate."""

    peer_der: list[bytes | None] = []

    def __init__(self, **kwargs: Any) -> None:
        self.app = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        Upper.peer_der.append(transport.get_extra_info("ssl_object").getpeercert(binary_form=True))

    def data_received(self, data: bytes) -> None:
        self.transport.write(data.upper())

    def connection_lost(self, exc: Exception | None) -> None:
        pass


class UpperGate(GatedProtocol):
    inner_class = Upper


def records_seen(pki: PKI, twin: bool, loop_factory: Any) -> tuple[int, int, bytes | None]:
    """(message callbacks during the handshake, during 20 requests after it, peer certificate the
    protocol behind the gate saw)."""
    calls = [0]

    def watch(*args: Any) -> None:
        calls[0] += 1

    context = server_context(pki)
    context._msg_callback = watch  # type: ignore[attr-defined]  # CPython's hook, as tlsrefusals uses it
    previous = connectionlimits._guard
    connectionlimits.install(connectionlimits.Limits(), context, server_context(pki) if twin else None)
    Upper.peer_der.clear()
    client = ssl.create_default_context(cafile=str(pki.ca_pem))
    client.load_cert_chain(*pki.client.pair)

    async def run() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: UpperGate(_loop=loop), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="localhost")
        writer.write(b"first")
        assert await reader.readexactly(5) == b"FIRST"
        handshake = calls[0]
        for i in range(20):
            writer.write(b"request %02d" % i)
            assert await reader.readexactly(10) == b"REQUEST %02d" % i
        after = calls[0] - handshake
        writer.close()
        server.close()
        await server.wait_closed()
        return handshake, after

    runner = asyncio.Runner(loop_factory=loop_factory)
    try:
        handshake, after = runner.run(run())
    finally:
        runner.close()
        connectionlimits._guard = previous
    return handshake, after, Upper.peer_der[0]


def loop_factories() -> list[Any]:
    factories: list[Any] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return factories
    return factories + [pytest.param(uvloop.new_event_loop, id="uvloop")]


@pytest.mark.parametrize("loop_factory", loop_factories())
def test_requests_after_the_handshake_do_not_call_the_watch(pki: PKI, loop_factory: Any) -> None:
    handshake, after, peer = records_seen(pki, twin=True, loop_factory=loop_factory)
    assert handshake > 0  # the watch saw the handshake (where refusals happen)
    assert after == 0
    assert peer == pki.client.cert.public_bytes(Encoding.DER)  # the verified client certificate stays


@pytest.mark.parametrize("loop_factory", loop_factories())
def test_without_a_twin_every_record_calls_the_watch(pki: PKI, loop_factory: Any) -> None:
    """What the twin saves (and that the test above can see it): without it the watch runs for
    every record of every request."""
    handshake, after, peer = records_seen(pki, twin=False, loop_factory=loop_factory)
    assert handshake > 0
    assert after >= 40  # at least one record each way per request
    assert peer == pki.client.cert.public_bytes(Encoding.DER)

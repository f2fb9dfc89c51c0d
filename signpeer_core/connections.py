"""Connection limits and timeouts of the server: what a flood of connections cannot take.

uvicorn (0.54) accepts every connection, never times out a TLS handshake or a connection that
sends no request, and counts no connections per client. One address could hold every file
descriptor with idle TCP connections, idle TLS connections, headers sent a byte at a time or a
body that never ends, and the health check could no longer connect. So the server's protocol is
a gate (:class:`GatedProtocol`) in front of uvicorn's HTTP protocol, on the plain TCP connection:

1. **Accept.** A connection over ``max_connections`` (this process) or over
   ``max_connections_per_address`` (from one IP address) is reset at once, before any TLS work,
   so its file descriptor is free again within the same loop turn.
2. **TLS handshake** (:meth:`asyncio.AbstractEventLoop.start_tls`), within
   ``tls_handshake_timeout`` seconds.
3. **Request head** within ``header_timeout`` seconds of the handshake, or of the first byte of a
   following request on a kept-alive connection (an idle kept-alive connection is closed by
   uvicorn after ``timeout_keep_alive``).
4. **Request body** within ``body_timeout`` seconds of the head.

Then the application has the connection until it answered; the gate only counts it. Every limit
that bites is logged as a warning (``signpeer.connections``), at most once per
:data:`WARN_INTERVAL` seconds per kind, with how many connections it closed since.

The gate forwards every protocol callback to uvicorn's protocol (``data_received`` and the rest:
one extra call each) and learns where a request is from the per-connection ASGI app wrapper
(:class:`_WatchedApp`): called when the head is complete, its ``receive`` sees the end of the
body, its ``send`` the end of the response. It uses no uvicorn internals beyond the protocol
constructor and ``app`` attribute that :mod:`signpeer_core.mtls` already relies on.

The limits, counts and warnings of the process are :mod:`signpeer_core.connectionlimits`; giving
memory back after bursts is :mod:`signpeer_core.memorytrim`.
"""

from __future__ import annotations

import asyncio
import select
import ssl
from collections.abc import Awaitable
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from signpeer_core.connectionlimits import current, log
from signpeer_core.outerlayers import FORWARDED, inner_stack

#: A deadline that is up looks again once the loop has run what it already queued, or, when the
#: client's bytes wait unread in the socket, this much later; at most _MAX_GRACES times.
_GRACE = 0.05
_MAX_GRACES = 3

# Where a connection is (the timer that runs in each state).
_HANDSHAKE, _HEAD, _BODY, _APP, _IDLE, _CLOSED = "handshake", "head", "body", "app", "idle", "closed"


class GatedProtocol(asyncio.Protocol):
    """The gate in front of uvicorn's HTTP protocol (``inner_class``) for one connection."""

    #: uvicorn's protocol class behind the gate (subclasses set it: :mod:`signpeer_core.mtls`).
    inner_class: type = type(None)

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self.loop: asyncio.AbstractEventLoop = kwargs.get("_loop") or asyncio.get_event_loop()
        self.guard = current()
        self.inner: Any = None
        self.transport: Any = None
        self.address = ""
        self.state = _HANDSHAKE
        self.timer: asyncio.Handle | None = None  #: a TimerHandle, or a look queued with call_soon
        self.timer_at = 0.0  #: when the timer fires (loop time)
        self.deadline: float | None = None  #: when the state's time is up (loop time), or None
        self.graces = 0  #: late looks granted to this deadline (see _check_deadline)
        self.counted = False
        self.task: asyncio.Task[None] | None = None
        self.raw_early: list[bytes] = []  # TLS bytes read before start_tls took the connection over
        self.early: list[bytes] = []  # decrypted data that came with the end of the handshake, before _ready
        self.early_eof = False
        self.corked: _JoiningTransport | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else "-"
        refused = self.guard.admit(self.address)
        if refused is not None:
            self.state = _CLOSED
            self.guard.warn("limit", "connection limit reached: %s; resetting new connections", refused)
            transport.abort()
            return
        self.counted = True
        if self.guard.ssl_context is None:
            self._ready(transport)
        else:
            # Not a byte before start_tls takes over: the ClientHello must reach the TLS layer.
            transport.pause_reading()
            self.task = self.loop.create_task(self._handshake(transport))

    async def _handshake(self, transport: Any) -> None:
        limits = self.guard.limits
        started = self.loop.time()
        # start_tls sets the TLS protocol and then, in two loop callbacks, starts it and resumes
        # reading; what came before (uvloop reads the ClientHello before it calls connection_made,
        # so pause_reading there is too late) is handed to it right after those two.
        self.loop.call_soon(self.loop.call_soon, self._hand_over_early, transport)
        try:
            tls = await self.loop.start_tls(transport, self, self.guard.ssl_context,  # type: ignore[arg-type]
                                            server_side=True, ssl_handshake_timeout=limits.tls_handshake_timeout)
        except (TimeoutError, ConnectionAbortedError) as exc:  # uvloop: ConnectionAbortedError on the timeout
            elapsed = self.loop.time() - started
            if isinstance(exc, ConnectionAbortedError) and elapsed < 0.9 * limits.tls_handshake_timeout:
                log.debug("TLS handshake with %s failed: %s", self.address, exc)
                transport.abort()
                return
            self.guard.warn("handshake", "closed a connection from %s: no TLS handshake within %s s "
                                         "(tls_handshake_timeout)", self.address, limits.tls_handshake_timeout)
            transport.abort()
            return
        except (ssl.SSLError, OSError, ConnectionError) as exc:
            # A refused client certificate, a port scan, a client that went away: not ours to log loudly.
            log.debug("TLS handshake with %s failed: %s", self.address, exc)
            transport.abort()
            return
        except asyncio.CancelledError:
            transport.abort()
            raise
        if self.state == _CLOSED or tls is None:
            transport.abort()
            return
        established = self.guard.established_context
        if established is not None:
            # The handshake is over, and with it what the refusal watch looks at: the rest of the
            # connection runs on the twin context without the watch (SSL_set_SSL_CTX, which also
            # takes the message callback off this connection; certificate, verified peer and
            # session stay as they are).
            ssl_object = tls.get_extra_info("ssl_object")
            if ssl_object is not None:
                ssl_object.context = established
        self._ready(tls)

    def _hand_over_early(self, transport: Any) -> None:
        early, self.raw_early = self.raw_early, []
        protocol = transport.get_protocol()
        if protocol is self or not early:
            return
        for data in early:
            # asyncio's and uvloop's TLS protocols are buffered protocols (uvloop's without the base class).
            if isinstance(protocol, asyncio.BufferedProtocol) or hasattr(protocol, "buffer_updated"):
                view = memoryview(data)
                while view:
                    buffer = protocol.get_buffer(len(view))
                    n = min(len(buffer), len(view))
                    buffer[:n] = view[:n]
                    protocol.buffer_updated(n)
                    view = view[n:]
            else:
                protocol.data_received(data)

    def _ready(self, transport: Any) -> None:
        self.transport = transport
        self.corked = _JoiningTransport(transport, self.loop)
        self.inner = self.inner_class(**self._kwargs)
        self.inner.connection_made(self.corked)
        self.inner.app = _WatchedApp.around(self.inner.app, self)
        self._enter(_HEAD)
        early, self.early = self.early, []
        for data in early:
            self.inner.data_received(data)
        if self.early_eof:
            self.inner.eof_received()

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            if self.state != _HANDSHAKE:
                return
            if self.transport.get_protocol() is self:  # from the TCP transport: TLS bytes
                self.raw_early.append(data)
            else:  # from the TLS transport start_tls made: the request, right after the handshake
                self.early.append(data)
            return
        if self.state == _IDLE:
            self._enter(_HEAD)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.inner is None:
            self.early_eof = True
            return None
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._enter(_CLOSED)
        if self.counted:
            self.counted = False
            self.guard.release(self.address)
            self.guard.trimmer.connection_closed(self.loop, self.guard.open)
        if self.inner is not None:
            self.inner.connection_lost(exc)
            # No cycle through the gate outlives the connection (gate -> inner -> app -> gate):
            # thousands of closed connections would wait for a full garbage collection.
            self.inner = None
        # During the handshake the TLS protocol tells start_tls too: _handshake logs why.

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # -- states --------------------------------------------------------------------------------
    def _enter(self, state: str) -> None:
        """Move to ``state`` and set its deadline (head and body only).

        A kept-alive connection changes state four times per request, so the deadline is a
        number and the timer is lazy: armed no later than the deadline, it looks when it fires
        and arms itself again for a deadline that moved on (at most once per timeout, where a
        timer per state was two timers made and cancelled per request).
        """
        if self.state == _CLOSED:
            return
        self.state = state
        limits = self.guard.limits
        if state == _HEAD and limits.header_timeout > 0:
            deadline = self.loop.time() + limits.header_timeout
        elif state == _BODY and limits.body_timeout > 0:
            deadline = self.loop.time() + limits.body_timeout
        else:
            self.deadline = None
            if state == _CLOSED and self.timer is not None:
                self.timer.cancel()
                self.timer = None
            return
        self.deadline = deadline
        self.graces = 0
        if self.timer is None or self.timer_at > deadline:
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = when
        self.timer = self.loop.call_at(when, self._check_deadline)

    def _check_deadline(self) -> None:
        self.timer = None
        deadline = self.deadline
        if deadline is None or self.state == _CLOSED:
            return
        if self.loop.time() < deadline:
            self._arm(deadline)
            return
        if self.graces < _MAX_GRACES:
            # Time is up by the clock, but the loop may have stalled past the deadline (CPU
            # starvation, a long pause) while the client was on time: uvloop runs due timers before
            # the callbacks already queued (the app task of a head it has read) and before it reads
            # the socket. Look again after those (a look or two more; a slow client gains ~0.15 s).
            self.graces += 1
            if self._unread():
                self._arm(self.loop.time() + _GRACE)
            else:
                self.timer_at = self.loop.time()
                self.timer = self.loop.call_soon(self._check_deadline)
            return
        limits = self.guard.limits
        if self.state == _HEAD:
            self._expired("no complete request head", "header_timeout", limits.header_timeout)
        elif self.state == _BODY:
            self._expired("request body not complete", "body_timeout", limits.body_timeout)

    def _unread(self) -> bool:
        """Whether bytes from the client wait in the socket, not read by the loop yet."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        try:
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)  # type: ignore[union-attr]
            return any(event & select.POLLIN for _, event in poller.poll(0))
        except (AttributeError, OSError, ValueError):  # no socket (closed, or a test transport)
            return False

    def _expired(self, what: str, setting: str, seconds: float) -> None:
        self.timer = None
        self.guard.warn(setting, "closed a connection from %s: %s within %s s (%s)", self.address, what, seconds,
                        setting)
        self.transport.abort()

    # -- from the app wrapper ------------------------------------------------------------------
    def request_started(self, has_body: bool) -> None:
        if has_body:
            self._enter(_BODY)
        else:
            self._untimed(_APP)

    def body_complete(self) -> None:
        if self.state == _BODY:
            self._untimed(_APP)

    def response_complete(self) -> None:
        if self.state == _APP or self.state == _BODY:
            self._untimed(_IDLE)

    def _untimed(self, state: str) -> None:
        """:meth:`_enter` for the states without a deadline (app and idle), which only leave a
        lazy timer to find no deadline when it fires."""
        if self.state != _CLOSED:
            self.state = state
            self.deadline = None


class _WatchedApp:
    """The connection's app, telling the gate where the request is."""

    __slots__ = ("app", "gate", "tls", "_starlette", "_stack")

    def __init__(self, app: Any, gate: GatedProtocol, tls: dict[str, Any] | None = None) -> None:
        self.app = app
        self.gate = gate
        #: What a request without a forwarded header calls instead of uvicorn's proxy-header
        #: middleware and Starlette's entry (outerlayers.py); None: every request calls ``app``.
        inner = inner_stack(app)
        self._starlette: Any = inner[0] if inner is not None else None
        self._stack: Any = inner[1] if inner is not None else None
        #: The connection's ASGI TLS extension, put into each request scope (what
        #: :class:`signpeer_core.mtls._TLSApp` does, one layer less per request); None: not here.
        self.tls = tls

    @classmethod
    def around(cls, app: Any, gate: GatedProtocol) -> _WatchedApp:
        """The wrapper of a connection's app; a TLS connection's ``_TLSApp`` is folded into it."""
        from signpeer_core.mtls import _TLSApp  # (mtls imports this module)

        if type(app) is _TLSApp:
            return cls(app.app, gate, app.tls)
        return cls(app, gate)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        tls = self.tls
        if tls is not None:
            extensions = scope.get("extensions")
            if extensions is None:
                scope["extensions"] = {"tls": tls}
            else:
                extensions["tls"] = tls
        gate = self.gate
        has_body = forwarded = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                has_body = value.strip() not in (b"0", b"")
            elif name == b"transfer-encoding":
                has_body = True
            elif name in FORWARDED:
                forwarded = True
        if has_body and _body_read(receive):
            has_body = False  # the whole body came with the head (the usual request): nothing left to time
        gate.request_started(has_body)

        async def watched_receive() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                gate.body_complete()
            return message

        corked = gate.corked

        # A plain function for the head, which needs nothing after it is sent (see _body_sent).
        def watched_send(message: dict[str, Any]) -> Awaitable[None]:
            kind = message["type"]
            if kind == "http.response.body":
                return _body_sent(send, message, corked, gate)
            if kind == "http.response.start" and corked is not None:
                corked.hold()  # the head goes out with the first part of the body
            return send(message)

        stack = self._stack
        try:
            if stack is None or forwarded:
                await self.app(scope, watched_receive if has_body else receive, watched_send)
            else:  # what the proxy-header middleware and Starlette's entry would do for this request
                scope["app"] = self._starlette
                await stack(scope, watched_receive if has_body else receive, watched_send)
        finally:
            if corked is not None:
                corked.release()


async def _body_sent(send: Any, message: dict[str, Any], corked: _JoiningTransport | None, gate: GatedProtocol) -> None:
    """Send a part of the response's body, then the head held with it, and tell the gate when
    it was the last. (The head is sent without a coroutine around it: an ASGI ``send`` need only
    return an awaitable, and one of its own cost about 700 instructions per message.)"""
    await send(message)
    if corked is not None:
        corked.release()
    if not message.get("more_body", False):
        gate.response_complete()


def _body_read(receive: Any) -> bool:
    """Whether uvicorn's HTTP parser has read the request's whole body already: ``receive`` is the
    httptools protocol's request cycle's, and it saw the message's end (the body came in the same
    reads as the head, before the app started). Then the request is in the app, not waiting for
    its body."""
    cycle = getattr(receive, "__self__", None)
    return cycle is not None and cycle.__class__ is RequestResponseCycle and cycle.more_body is False


class _JoiningTransport:
    """The TLS transport as uvicorn's protocol sees it: a response's head and the first part of
    its body leave in one write.

    uvicorn writes the head and the body of a response separately: two TLS records and two
    system calls (on loopback a send also does the receiver's TCP work) where one does. Between
    :meth:`hold` (the head is sent) and :meth:`release` (the body was sent, or the request ended)
    writes are kept and then joined; a body that does not follow within the same loop turn
    releases the head on its own. Everything else is the transport's.
    """

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._transport.write(data)
        else:
            self._held.append(data)

    def hold(self) -> None:
        if self._held is None:
            self._held = []
            self._loop.call_soon(self.release)

    def release(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if held and not self._transport.is_closing():
                self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.release()
        self._transport.close()

    # What uvicorn's protocol calls per request, without the detour through __getattr__.
    def is_closing(self) -> bool:
        return bool(self._transport.is_closing())

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


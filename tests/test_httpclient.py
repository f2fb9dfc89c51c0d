"""The core HTTP client against a real server: uvicorn + Starlette on loopback TLS.

Each error class of :mod:`signpeer_core.errors` raised by a route comes back to the client as
the class :data:`~signpeer_core.httpclient.STATUS_ERRORS` names for its status, with the
server's message; transport failures (connection refused, a server that never answers, an
untrusted server certificate, a refused or expired client certificate, unreadable TLS files)
become :class:`TLSError` / :class:`ServerUnreachableError` with a message naming the URL and
what to check.
"""

from __future__ import annotations

import datetime as dt
import inspect
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from signpeer_core import errors
from signpeer_core.app import error_response
from signpeer_core.errors import (
    AuthorizationError,
    ServerUnreachableError,
    SignpeerError,
    TLSError,
    TransportError,
)
from signpeer_core.httpclient import ONE_WRITE_MOST, STATUS_ERRORS, HttpClient, KeptConnection, base_url
from signpeer_core.testing import PKI, make_pki

#: Every class of the error tree, by name (what the test server raises).
ERROR_CLASSES = {name: cls for name, cls in inspect.getmembers(errors, inspect.isclass)
                 if issubclass(cls, SignpeerError)}


async def _raise(request: Request) -> Response:
    cls = ERROR_CLASSES[request.path_params["name"]]
    raise cls(f"the server says {cls.__name__} ünïcode")


async def _plain(request: Request) -> Response:
    return PlainTextResponse("upstream gone", status_code=502)


async def _ok(request: Request) -> Response:
    return JSONResponse({"ok": True, "client": bool(request.scope.get("extensions", {}).get("tls"))})


async def _echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse({"type": request.headers.get("content-type"), "length": request.headers.get("content-length"),
                         "body": body.decode()})


async def _signpeer_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignpeerError)
    return error_response(exc.status, exc.message)


APP = Starlette(routes=[Route("/raise/{name}", _raise, methods=["GET", "POST"]), Route("/plain", _plain),
                        Route("/ok", _ok), Route("/echo", _echo, methods=["POST"])],
                exception_handlers={SignpeerError: _signpeer_error})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(condition: Any, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def server(pki: PKI) -> Iterator[str]:
    """The test app on https://127.0.0.1:<port>, client certificates optional (as signpeer serve)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(APP, ssl_certfile=str(pki.server.pem), ssl_keyfile=str(pki.server.key_pem),
                            ssl_ca_certs=str(pki.ca_pem), ssl_cert_reqs=ssl.CERT_OPTIONAL, log_level="warning",
                            lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    _wait_for(lambda: uv.started or not thread.is_alive())
    assert uv.started, "the test server did not start"
    try:
        yield f"https://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        uv.should_exit = True
        thread.join(10)
        sock.close()


@pytest.mark.parametrize("name", sorted(ERROR_CLASSES))
def test_each_error_class_comes_back_with_the_servers_message(server: str, pki: PKI, name: str) -> None:
    cls = ERROR_CLASSES[name]
    expected = STATUS_ERRORS.get(cls.status, SignpeerError)
    with HttpClient(server, cafile=pki.ca_pem) as client, pytest.raises(SignpeerError) as raised:
        client.request("GET", f"/raise/{name}")
    assert type(raised.value) is expected
    assert raised.value.status == cls.status
    assert raised.value.message == f"the server says {name} ünïcode (HTTP {cls.status})"
    assert not isinstance(raised.value, TransportError)


def test_an_answer_without_json_keeps_its_text_and_status(server: str, pki: PKI) -> None:
    with HttpClient(server, cafile=pki.ca_pem) as client, pytest.raises(SignpeerError) as raised:
        client.json("GET", "/plain")
    assert raised.value.status == 502 and raised.value.message == "upstream gone (HTTP 502)"


def test_a_client_raises_its_own_subclasses(server: str, pki: PKI) -> None:
    class Refused(AuthorizationError):
        exit_code = 3

    with HttpClient(server, cafile=pki.ca_pem, error_classes={AuthorizationError: Refused}) as client:
        with pytest.raises(Refused) as raised:
            client.request("GET", "/raise/AuthorizationError")
        assert raised.value.exit_code == 3 and raised.value.status == 403
        assert client.json("GET", "/ok")["ok"] is True


def test_kept_alive_connection_with_a_client_certificate(server: str, pki: PKI) -> None:
    with HttpClient(server, cafile=pki.ca_pem, cert=pki.client.pem, key=pki.client.key_pem) as client:
        for _ in range(3):
            assert client.json("GET", "/ok")["ok"] is True


def test_connection_refused_names_the_url(pki: PKI) -> None:
    url = f"https://127.0.0.1:{_free_port()}"
    with HttpClient(url, cafile=pki.ca_pem) as client, pytest.raises(ServerUnreachableError) as raised:
        client.request("GET", "/ok")
    assert f"cannot connect to {url}" in raised.value.message
    assert "Is signpeer serve running there" in raised.value.message


def test_a_server_that_never_answers_times_out(pki: PKI) -> None:
    with socket.socket() as silent:  # accepts TCP connections (backlog) and never speaks TLS
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        with HttpClient(url, cafile=pki.ca_pem, timeout=0.3) as client, \
                pytest.raises(ServerUnreachableError) as raised:
            client.request("GET", "/ok")
    assert f"no answer from {url} in time" in raised.value.message


def test_wrong_ca_says_which_option_to_check(server: str, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    with HttpClient(server, cafile=other.ca_pem, ca_hint="--cacert") as client, \
            pytest.raises(TLSError) as raised:
        client.request("GET", "/ok")
    message = raised.value.message
    assert f"cannot connect to {server}" in message and "not trusted" in message and "--cacert" in message


def test_client_certificate_of_an_unknown_ca_is_refused_by_the_server(server: str, pki: PKI, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    with HttpClient(server, cafile=pki.ca_pem, cert=other.client.pem, key=other.client.key_pem,
                    cert_hint="--cert/--key") as client, pytest.raises(TLSError) as raised:
        client.request("GET", "/ok")
    assert server in raised.value.message and "--cert/--key" in raised.value.message


def test_expired_client_certificate_is_refused_before_connecting(pki: PKI) -> None:
    now = dt.datetime.now(dt.UTC)
    expired = pki.issue_client("expired", not_before=now - dt.timedelta(days=3), not_after=now - dt.timedelta(days=1))
    with pytest.raises(TLSError, match="expired on"):
        HttpClient("https://127.0.0.1:1", cafile=pki.ca_pem, cert=expired.pem, key=expired.key_pem)


def test_unreadable_tls_files(tmp_path: Path) -> None:
    with pytest.raises(TLSError, match="cannot load the TLS files") as raised:
        HttpClient("https://127.0.0.1:1", cafile=tmp_path / "missing.pem")
    assert "missing.pem" in raised.value.message


def test_base_url() -> None:
    assert base_url("localhost:8443", "/signserver/peer/v1") == "https://localhost:8443/signserver/peer/v1"
    assert base_url("https://h:1/signserver/peer/v1/", "/signserver/peer/v1") == "https://h:1/signserver/peer/v1"
    assert base_url("http://h:1") == "http://h:1"


# -- KeptConnection: the same answers and errors as HttpClient, on http.client ----------------------
def _both(client: HttpClient, method: str, path: str) -> tuple[Any, Any]:
    """What ``client.json`` and its ``connection().json`` each return or raise (type, status, message)."""
    out = []
    conn = client.connection()
    try:
        for call in (lambda: client.json(method, path), lambda: conn.json(method, path, {"x": 1})):
            try:
                out.append(call())
            except SignpeerError as exc:
                out.append((type(exc), exc.status, exc.message))
    finally:
        conn.close()
    return out[0], out[1]


@pytest.mark.parametrize("name", sorted(ERROR_CLASSES))
def test_a_kept_connection_raises_what_the_client_raises(server: str, pki: PKI, name: str) -> None:
    with HttpClient(server, cafile=pki.ca_pem) as client:
        by_client, by_connection = _both(client, "GET", f"/raise/{name}")
    assert by_connection == by_client
    assert by_client[2] == f"the server says {name} ünïcode (HTTP {ERROR_CLASSES[name].status})"


def test_a_kept_connection_keeps_the_connection_and_the_answers(server: str, pki: PKI) -> None:
    with HttpClient(server, cafile=pki.ca_pem, cert=pki.client.pem, key=pki.client.key_pem) as client:
        assert _both(client, "GET", "/plain")[1] == (SignpeerError, 502, "upstream gone (HTTP 502)")
        conn = client.connection()
        try:
            assert [conn.json("GET", "/ok", {})["ok"] for _ in range(3)] == [True] * 3
            sock = conn._conn.sock if conn._conn is not None else None
            assert sock is not None and conn.json("GET", "/ok", {})["ok"] is True
            assert conn._conn is not None and conn._conn.sock is sock  # the same connection all along
        finally:
            conn.close()


def test_a_kept_connection_sends_any_body_or_none(server: str, pki: PKI) -> None:
    """``call``: JSON by default, a raw body with its own content type, or no body at all (what
    ``PeerClient`` sends: the install's PEM chain, the CSR call's empty POST)."""
    with HttpClient(server, cafile=pki.ca_pem) as client:
        conn = client.connection()
        try:
            assert conn.call("POST", "/echo", b'{"a": 1}') == {"type": "application/json", "length": "8",
                                                                "body": '{"a": 1}'}
            pem = b"-----BEGIN CERTIFICATE-----\n"
            assert conn.call("POST", "/echo", pem, "application/pem-certificate-chain") == {
                "type": "application/pem-certificate-chain", "length": str(len(pem)), "body": pem.decode()}
            assert conn.call("POST", "/echo") == {"type": None, "length": "0", "body": ""}
            assert conn.json("POST", "/echo", {"b": [2]})["body"] == '{"b": [2]}'
            with pytest.raises(SignpeerError) as caught:
                conn.call("POST", "/raise/ConflictError", b"x", "text/plain")
            assert caught.value.status == 409
        finally:
            conn.close()


def test_a_kept_connection_writes_a_request_and_its_body_at_once(server: str, pki: PKI) -> None:
    """A body in memory goes out with the request's head in one write (one TLS record, one system
    call), not after it as ``http.client`` sends it; a request without a body is one write too."""
    with HttpClient(server, cafile=pki.ca_pem) as client:
        conn = client.connection()
        try:
            assert conn.json("GET", "/ok", {})["ok"] is True  # the connection is open
            assert conn._conn is not None
            writes: list[bytes] = []
            send = conn._conn.send

            def counted(data: bytes) -> None:
                writes.append(data)
                send(data)

            conn._conn.send = counted  # type: ignore[method-assign]
            assert conn.call("POST", "/echo", b'{"a": 1}')["body"] == '{"a": 1}'
            assert len(writes) == 1, writes
            assert writes[0].startswith(b"POST /echo HTTP/1.1\r\n") and writes[0].endswith(b'\r\n\r\n{"a": 1}')
            writes.clear()
            pem = b"-----BEGIN CERTIFICATE-----\n" * 200  # larger than a TCP segment, within one TLS record
            assert conn.call("POST", "/echo", pem, "application/pem-certificate-chain")["length"] == str(len(pem))
            assert len(writes) == 1 and writes[0].endswith(pem)
            writes.clear()
            large = b"x" * ONE_WRITE_MOST  # with its head, more than one record: the body is not copied to join it
            assert conn.call("POST", "/echo", large, "text/plain")["length"] == str(len(large))
            assert len(writes) == 2 and writes[1] is large
            writes.clear()
            assert conn.call("POST", "/echo") == {"type": None, "length": "0", "body": ""}
            assert len(writes) == 1 and writes[0].endswith(b"\r\n\r\n")
        finally:
            conn.close()


class _AnswerOnceServer:
    """A TLS server that answers one request per connection, then closes it (as a server's idle
    timeout closes a kept-alive connection), and counts the connections it closed."""

    def __init__(self, pki: PKI, connections: int) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pki.server.pem, pki.server.key_pem)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        self.closed = 0
        self.lengths: list[int] = []
        self.thread = threading.Thread(target=self._serve, args=(connections,), daemon=True)
        self.thread.start()

    def _serve(self, connections: int) -> None:
        for _ in range(connections):
            raw, _ = self.listener.accept()
            with self.context.wrap_socket(raw, server_side=True) as tls:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += tls.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:")))
                while len(body) < length:
                    body += tls.recv(65536)
                self.lengths.append(len(body))
                answer = b'{"ok": true}'
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
                            b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer))
            self.closed += 1
        self.listener.close()


@pytest.mark.parametrize("size", [100, 40_000], ids=["one-record", "several-records"])
def test_a_kept_connection_the_server_closed_is_retried_on_a_fresh_one(pki: PKI, size: int) -> None:
    """The server closed the kept-alive connection while it was idle: the next call fails on it
    (the write or the read finds it closed; over TLS a write may report the TLS layer's EOF) and
    is sent again once on a fresh connection."""
    server = _AnswerOnceServer(pki, connections=2)
    body = b"x" * size
    with HttpClient(server.url, cafile=pki.ca_pem) as client:
        conn = client.connection()
        try:
            assert conn.call("POST", "/x", body, "text/plain") == {"ok": True}
            _wait_for(lambda: server.closed == 1)
            assert conn.call("POST", "/x", body, "text/plain") == {"ok": True}
        finally:
            conn.close()
    server.thread.join(10)
    assert server.lengths == [size, size] and server.closed == 2


def test_calls_from_many_threads_share_at_most_max_connections(server: str, pki: PKI) -> None:
    """``HttpClient.call``: kept connections from a pool, one per thread in flight, never more than
    ``max_connections``, each answer its own call's; error answers raise as ``request`` does."""
    import concurrent.futures

    with HttpClient(server, cafile=pki.ca_pem, max_connections=3) as client:
        made: list[KeptConnection] = []
        connection = client.connection

        def counted() -> KeptConnection:
            conn = connection()
            made.append(conn)
            return conn

        client.connection = counted  # type: ignore[method-assign]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            bodies = list(pool.map(lambda i: client.call("POST", "/echo", b"%d" % i, "text/plain")["body"], range(60)))
        assert bodies == [str(i) for i in range(60)]
        assert 1 <= len(made) <= 3 and sorted(map(id, client._kept)) == sorted(map(id, made))
        with pytest.raises(SignpeerError) as caught:
            client.call("POST", "/raise/ConflictError", b"x", "text/plain")
        assert caught.value.status == 409 and len(client._kept) == len(made)  # the connection went back
    assert client._kept == [] and all(conn._conn is None for conn in made)  # closed with the client


def test_a_kept_connection_reports_transport_failures_as_the_client_does(server: str, pki: PKI,
                                                                          tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    refused = f"https://127.0.0.1:{_free_port()}"
    cases = [HttpClient(refused, cafile=pki.ca_pem), HttpClient(server, cafile=other.ca_pem),
             HttpClient(server, cafile=pki.ca_pem, cert=other.client.pem, key=other.client.key_pem)]
    for client in cases:
        with client:
            by_client, by_connection = _both(client, "GET", "/ok")
        assert by_connection == by_client and issubclass(by_client[0], TransportError)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        with HttpClient(f"https://127.0.0.1:{silent.getsockname()[1]}", cafile=pki.ca_pem, timeout=0.3) as client:
            by_client, by_connection = _both(client, "GET", "/ok")
    assert by_connection == by_client and "in time" in by_client[2]


def test_a_drop_after_the_handshake_reads_as_a_refused_client_certificate(pki: PKI) -> None:
    """A server that completes the TLS handshake and then drops the connection without a word (how
    TLS 1.3 servers refuse a client certificate): the client and a kept connection both say so,
    whether the drop reaches them while writing the request or while reading the answer."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server.pem, pki.server.key_pem)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(pki.ca_pem)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(raw, server_side=True):
                    pass  # handshake done, then closed without close_notify being read
            except (OSError, ssl.SSLError):
                pass
            raw.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{listener.getsockname()[1]}"
        with HttpClient(url, cafile=pki.ca_pem, cert=pki.client.pem, key=pki.client.key_pem) as client:
            by_client, by_connection = _both(client, "GET", "/ok")
        assert by_connection == by_client, (by_client, by_connection)
        assert by_client[0] is errors.TLSError and "closed the connection right after the handshake" in by_client[2]
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (a close alone does not)
        listener.close()
        thread.join(5)
        assert not thread.is_alive()

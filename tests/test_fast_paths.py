"""What the REST signing path's speed-ups must keep (docs/performance.md, "REST signing").

* The connection gate's lazy deadline: a kept-alive connection whose previous request had a body
  (deadline ``body_timeout``) is still closed ``header_timeout`` after it starts an incomplete head.
* A response's head and body leave in one write, and a head without a body in the same turn
  still goes out.
* The worker log's short way writes the line ``logging`` would have written (text and JSON), and
  a handler of the test's own on the logger still gets every line the ``logging`` way; the log
  writer fills a line's template as ``%`` does, and a line's milliseconds are its time's.
* A response head passes the guard middleware and the gate's app wrapper as the server's own
  awaitable (no coroutine of theirs around it).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from signpeer_core import logconfig, logwriter
from signpeer_core.connections import _JoiningTransport
from signpeer_core.pipeline import Caller, Pipeline
from signpeer_core.settings import load_settings
from signpeer_core.testing import PKI, ServerProcess, add_signer, client_context, open_services, write_home

PROCESS = "/signserver/rest/v1/workers/Fast/process"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: PKI):
    home = write_home(tmp_path_factory.mktemp("fast") / "home", pki, "header_timeout = 1.0\nbody_timeout = 30.0\n")
    services = open_services(home)
    add_signer(services, pki, "Fast", AUTHTYPE="NOAUTH")
    services.close()
    server = ServerProcess(home, (), None).start()
    yield server
    server.stop()


def test_a_kept_alive_connection_gets_the_header_timeout_after_a_request_with_a_body(server: ServerProcess,
                                                                                    pki: PKI) -> None:
    body = json.dumps({"data": "hello"}).encode()
    request = (f"POST {PROCESS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def run() -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=client_context(pki.ca_pem))
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        await reader.readexactly(length)
        writer.write(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 20) == b""  # the server closes: EOF
        writer.close()
        return head, time.monotonic() - started

    head, waited = asyncio.run(run())
    assert head.startswith(b"HTTP/1.1 200") and b"x-request-id" in head.lower() and b"nosniff" in head
    # header_timeout (1 s) applies, not the body_timeout (30 s) the previous request armed.
    assert waited < 10, f"closed only after {waited:.1f} s"
    assert "header_timeout" in server.log()


class _Recording:
    """A transport that records its writes (the thing outside the class under test)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def test_the_head_and_the_body_of_a_response_leave_in_one_write() -> None:
    async def run() -> list[list[bytes]]:
        inner = _Recording()
        joined = _JoiningTransport(inner, asyncio.get_running_loop())
        joined.hold()
        joined.write(b"HTTP/1.1 200 OK\r\n\r\n")
        joined.write(b"body")
        joined.release()
        one = list(inner.writes)
        inner.writes.clear()
        joined.hold()  # a head whose body does not follow in this turn still goes out
        joined.write(b"HTTP/1.1 200 OK\r\n\r\n")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        alone = list(inner.writes)
        inner.writes.clear()
        joined.hold()  # close() sends what is held first
        joined.write(b"last")
        joined.close()
        assert joined.get_extra_info("peername") == ("127.0.0.1", 1)
        return [one, alone, inner.writes]

    one, alone, last = asyncio.run(run())
    assert one == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    assert alone == [b"HTTP/1.1 200 OK\r\n\r\n"]
    assert last == [b"last"]


@contextlib.contextmanager
def server_log(tmp_path: Path, log_format: str) -> Iterator[logwriter.BatchedStreamHandler]:
    """The server's log writer as ``configure_logging`` sets it up in ``log_format``, writing to a
    StringIO; signpeer's loggers as they were after. (Inside the test: pytest's own capture
    handlers join ``signpeer`` between a fixture's set-up and the test.)"""
    settings = replace(load_settings(tmp_path), log_format=log_format)
    root = logging.getLogger("signpeer")
    saved = (root.handlers[:], root.level, root.propagate, getattr(root, "_signpeer_configured", False))
    for kept in saved[0]:
        root.removeHandler(kept)
    root._signpeer_configured = False  # type: ignore[attr-defined]
    try:
        logconfig.configure_logging(settings)
        handler = logconfig._handler
        assert handler is not None
        handler.setStream(io.StringIO())
        yield handler
    finally:
        for added in root.handlers[:]:
            root.removeHandler(added)
        for kept in saved[0]:
            root.addHandler(kept)
        root.setLevel(saved[1])
        root.propagate = saved[2]
        root._signpeer_configured = saved[3]  # type: ignore[attr-defined]
        logwriter.set_writer(None)
        logconfig._handler = None


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_worker_log_line_of_the_short_way_is_the_logging_line(tmp_path: Path, log_format: str) -> None:
    with server_log(tmp_path, log_format) as handler:
        worker = logging.getLogger("signpeer.worker")
        caller = Caller("REST", None, "127.0.0.1")
        assert logwriter.direct_writer(worker) is handler

        async def log_both() -> None:
            Pipeline.log("r-1", "Fast", "alice", caller, "FAILED 400", time.perf_counter(), 'bad "data"\nx')
            captured = logging.Handler()  # a handler of the test's own: logging's way, for this line
            captured.emit = lambda record: None  # type: ignore[method-assign]
            worker.addHandler(captured)
            try:
                assert logwriter.direct_writer(worker) is None
                Pipeline.log("r-1", "Fast", "alice", caller, "FAILED 400", time.perf_counter(), 'bad "data"\nx')
            finally:
                worker.removeHandler(captured)
            await asyncio.sleep(0)

        asyncio.run(log_both())
        handler.flush()
        lines = handler.stream.getvalue().splitlines()
        assert len(lines) == 2, lines
        short, usual = lines
        if log_format == "json":
            a, b = json.loads(short), json.loads(usual)
            assert a.pop("time")[:17] == b.pop("time")[:17]
            assert a.pop("duration_ms") >= 0 and b.pop("duration_ms") >= 0
            assert a.pop("message").split(" duration_ms=")[0] == b.pop("message").split(" duration_ms=")[0]
            assert a == b and a["request_id"] == "r-1" and a["error"] == 'bad "data"\nx' and a["client"] == "user:alice"
        else:
            cut = short.index(" INFO ")
            assert short[cut:].split(" duration_ms=")[0] == usual[cut:].split(" duration_ms=")[0]
            assert "request_id=r-1 worker=Fast client='user:alice' remote=127.0.0.1 outcome=FAILED 400" in short
            assert short.endswith("error='bad \"data\"\\nx'") and usual.endswith("error='bad \"data\"\\nx'")


def test_a_duration_written_with_two_decimals_is_the_same_rounded_first_or_not() -> None:
    """Pipeline.log rounds the duration only for a format that writes the fields as they are
    (JSON): the text format's ``%(duration_ms).2f`` makes the same text of the unrounded value."""
    import random

    rng = random.Random(13)
    values = [0.0, 0.005, 0.015, 0.125, 0.135, 1.005, 2.675, 0.004999999, 0.0049999999999, 999.995, 12345.675,
              1e-9, 1e15 + 0.125, 1e300, 5e-324]
    values += [rng.uniform(0, 2000) for _ in range(20000)]
    values += [round(rng.uniform(0, 100), 3) for _ in range(20000)]  # halfway in decimal, not in binary
    values += [n / 1000 + 0.005 for n in range(0, 100000, 7)]
    for value in values:
        assert f"{round(value, 2):.2f}" == f"{value:.2f}" == logwriter.fill("%(d).2f", {"d": value}), value


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_log_writer_says_whether_its_format_writes_the_fields(tmp_path: Path, log_format: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The text format shows only the message (Pipeline.log then leaves the duration unrounded),
    the JSON format the fields, rounded to two decimals; the lines read the same either way."""
    with server_log(tmp_path, log_format) as handler:
        json_format = log_format == "json"
        assert handler.writes_fields is json_format
        added: list[object] = []
        add = handler.add

        def recording_add(name: str, template: str, fields: Mapping[str, object]) -> None:
            added.append(fields["duration_ms"])
            add(name, template, fields)

        monkeypatch.setattr(handler, "add", recording_add)
        clock = iter([10.0, 10.0 + 0.00202499999])  # started, then the line's reading: 2.02499999 ms
        monkeypatch.setattr("signpeer_core.pipeline.time.perf_counter", lambda: next(clock))
        caller = Caller("REST", None, "127.0.0.1")

        async def log_one() -> None:
            Pipeline.log("r-1", "Fast", None, caller, "SUCCESS", time.perf_counter(), None)
            await asyncio.sleep(0)

        asyncio.run(log_one())
        monkeypatch.undo()
        handler.flush()
        (line,) = handler.stream.getvalue().splitlines()
        duration = added[0]
        assert isinstance(duration, float)
        if json_format:
            assert duration == 2.02 and json.loads(line)["duration_ms"] == 2.02
            assert json.loads(line)["message"].endswith(" duration_ms=2.02")
        else:
            assert duration != round(duration, 2) and abs(duration - 2.02499999) < 1e-6
            assert line.endswith(" duration_ms=2.02")
        handler.setFormatter(logging.Formatter())  # a formatter that does not say: the fields count
        assert handler.writes_fields


def test_a_signing_request_still_writes_its_complete_worker_log_line(server: ServerProcess, pki: PKI) -> None:
    import httpx

    from signpeer_core.testing import wait_until

    r = httpx.post(server.url + PROCESS, json={"data": "aGVsbG8=", "encoding": "BASE64"},
                   verify=client_context(pki.ca_pem))
    assert r.status_code == 200, r.text
    rid = r.headers["X-Request-Id"]
    assert r.json()["requestId"] == rid
    wait_until(lambda: f"request_id={rid} " in server.log(), 10, what="the worker log line")
    line = next(line for line in server.log().splitlines() if f"request_id={rid} " in line)
    assert " INFO signpeer.worker: " in line
    assert f"request_id={rid} worker=Fast client='-' remote=127.0.0.1 outcome=SUCCESS duration_ms=" in line



class _Reading(_Recording):
    """The transport under uvicorn's protocol: flow control is a no-op here."""

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _GateEvents:
    """What the app wrapper tells the connection gate (the gate's timers are not under test)."""

    corked = None

    def __init__(self) -> None:
        self.events: list[str] = []

    def request_started(self, has_body: bool) -> None:
        self.events.append(f"started(has_body={has_body})")

    def body_complete(self) -> None:
        self.events.append("body complete")

    def response_complete(self) -> None:
        self.events.append("response complete")


@pytest.mark.parametrize("split", [False, True], ids=["body-with-head", "body-later"])
def test_a_body_read_with_the_head_is_not_timed_and_a_later_one_is(split: bool) -> None:
    """uvicorn's parser reads a body that came in the same bytes as the head before the app starts:
    the gate is told there is no body left to wait for (no body_timeout), and the app reads
    uvicorn's own ``receive``. A body still on its way is timed until the app has read it."""
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    from signpeer_core.connections import _WatchedApp

    body = b'{"data": "aGVsbG8="}'
    head = (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(body))
    gate = _GateEvents()
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["unwrapped"] = getattr(receive, "__self__", None) is not None
        gate.events.append("app reads")
        message = await receive()
        seen["body"] = message["body"]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def run() -> None:
        config = Config(app=app, lifespan="off", proxy_headers=False, log_level="warning")
        config.load()
        protocol = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={},
                                     _loop=asyncio.get_running_loop())
        transport = _Reading()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        protocol.app = _WatchedApp(protocol.app, gate)  # type: ignore[arg-type]  # what the gate does
        protocol.data_received(head if split else head + body)
        if split:
            while "app reads" not in gate.events:
                await asyncio.sleep(0)
            protocol.data_received(body)
        while "response complete" not in gate.events:
            await asyncio.sleep(0)
        assert b"".join(transport.writes).endswith(b"\r\n\r\nok")

    asyncio.run(asyncio.wait_for(run(), 30))
    assert seen["body"] == body
    if split:
        assert gate.events == ["started(has_body=True)", "app reads", "body complete", "response complete"]
        assert seen["unwrapped"] is False
    else:
        assert gate.events == ["started(has_body=False)", "app reads", "response complete"]
        assert seen["unwrapped"] is True


@pytest.mark.parametrize("guarded", [True, False], ids=["guarded-head", "plain-head"])
def test_a_response_head_passes_the_guard_and_the_gate_without_a_coroutine_of_theirs(guarded: bool) -> None:
    """``GuardMiddleware`` and the gate's app wrapper hand a response's head to the server's
    ``send`` and return its awaitable as it is (each coroutine around a message cost about 700
    instructions); the head still gets its headers, and the body still ends the response."""
    from signpeer_core.app import GuardMiddleware, guarded_head
    from signpeer_core.connections import _WatchedApp

    gate = _GateEvents()
    sent: list[dict[str, Any]] = []
    made: list[Any] = []
    seen: list[Any] = []

    async def write(message: dict[str, Any]) -> None:
        sent.append(message)

    def server_send(message: dict[str, Any]) -> Any:
        made.append(write(message))
        return made[-1]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        head = (guarded_head(scope, 200, [(b"content-length", b"2")]) if guarded
                else {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        for message in (head, {"type": "http.response.body", "body": b"ok"}):
            seen.append(send(message))
            await seen[-1]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/x", "root_path": "", "headers": [(b"host", b"x")]}
    asyncio.run(_WatchedApp(GuardMiddleware(app, 1000), gate)(scope, receive, server_send))  # type: ignore[arg-type]
    assert seen[0] is made[0]
    names = [name for name, _ in sent[0]["headers"]]
    assert names == [b"content-length", b"x-content-type-options", b"x-request-id"]
    assert sent[1]["body"] == b"ok" and gate.events == ["started(has_body=False)", "response complete"]


@pytest.mark.parametrize("template", ["pipeline", "pipeline-error", "a %% b %(worker)s%%", "plain {x} \\n \"q\"",
                                      "%(worker)r %(duration_ms).2f %(duration_ms).3f", "%(worker)5s", "%(n)d", "%s"])
def test_a_log_line_is_filled_as_percent_fills_it(template: str) -> None:
    """The log writer fills a line's template (``logwriter.fill``) as ``template % fields`` does:
    the same text, or the same error; the worker log's own templates without ``%``."""
    from signpeer_core import pipeline

    template = {"pipeline": pipeline._LINE, "pipeline-error": pipeline._LINE_WITH_ERROR}.get(template, template)
    usual: dict[str, object] = {"request_id": "r-1", "worker": "Fast", "client": "cert:CN=a b,O=c",
                                "remote": "127.0.0.1", "outcome": "SUCCESS", "duration_ms": 0.466, "n": 3,
                                "error": 'bad "data"\nx\u202e'}
    for fields in (usual, {**usual, "duration_ms": 3}, {**usual, "duration_ms": "1.5"},
                   {**usual, "duration_ms": float("nan")}, {**usual, "duration_ms": 1e300}, {**usual, "worker": 7},
                   {}, {"duration_ms": 1.0}):
        try:
            expected: object = template % fields
        except Exception as exc:  # the same error is what is compared
            expected = (type(exc), exc.args)
        try:
            got: object = logwriter.fill(template, fields)
        except Exception as exc:
            got = (type(exc), exc.args)
        assert got == expected, (template, fields)
    if template in (pipeline._LINE, pipeline._LINE_WITH_ERROR):
        assert logwriter._fillers[template] is not None


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_lines_milliseconds_are_its_times(log_format: str) -> None:
    formatter: Any = logconfig._JsonFormatter() if log_format == "json" else logconfig._LineFormatter()
    for created in (1_764_000_000.0, 1_764_000_000.0004, 1_764_000_000.9996, 1_764_000_000.123456, 0.5, -1.5):
        line = formatter.format_parts(created, "INFO", "signpeer.worker", "m", {})
        stamp = json.loads(line)["time"] if log_format == "json" else line.split(" INFO ")[0]
        assert stamp.rstrip("Z").split("," if log_format == "text" else ".")[-1] == \
            f"{int((created - int(created)) * 1000):03d}", created


def test_past_256_templates_percent_fills_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logwriter, "_fillers", {f"t{n}": None for n in range(256)})
    assert logwriter.fill("a=%(a)s", {"a": 1}) == "a=1"
    assert len(logwriter._fillers) == 256

"""A small OTLP/HTTP trace receiver on loopback for tests and benchmarks.

It takes what an OpenTelemetry exporter posts to ``/v1/traces`` (protobuf
``ExportTraceServiceRequest``, optionally gzip-compressed), decodes it with ``opentelemetry-proto``
and keeps every span with its resource's attributes. Needs the ``opentelemetry`` extra.

In tests, take the ``otlp_receiver`` fixture (of the signpeer pytest plugin; the test is skipped
when the extra is not installed), start the server with :func:`tracing_env`, and wait for one
request's spans with :func:`request_spans`::

    def test_traced(home, start_server, https_client, otlp_receiver):
        server = start_server(home, env=tracing_env(otlp_receiver))
        ... sign; request_id = response.headers["x-request-id"] ...
        spans = request_spans(otlp_receiver, request_id, {"signpeer.request", "signpeer.token.sign"})

Outside pytest (benchmarks): ``with OtlpReceiver() as receiver: ...``.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from signpeer_core.testing.wait import wait_until


@dataclass
class ReceivedSpan:
    """One span as exported, with the ids as hex and attributes as plain values."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: str  #: "SERVER", "INTERNAL", ...
    status: str  #: "UNSET", "OK" or "ERROR"
    status_message: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    events: list[str] = field(default_factory=list)
    start_ns: int = 0
    end_ns: int = 0


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


class OtlpReceiver:
    """Serves ``POST /v1/traces`` on 127.0.0.1 in a thread; :attr:`spans` grows as batches come."""

    def __init__(self, keep: bool = True) -> None:
        """``keep=False``: only count what comes (:attr:`span_count`), for benchmarks."""
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
        from opentelemetry.proto.trace.v1 import trace_pb2

        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.span_count = 0
        self.keep = keep
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                message = trace_service_pb2.ExportTraceServiceRequest()
                message.ParseFromString(body)
                receiver._add(message, trace_pb2)
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    def _add(self, message: Any, trace_pb2: Any) -> None:
        if not self.keep:
            count = sum(len(ss.spans) for rs in message.resource_spans for ss in rs.scope_spans)
            with self._lock:
                self.requests += 1
                self.span_count += count
            return
        got = []
        for resource_spans in message.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    got.append(ReceivedSpan(
                        name=s.name, trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        kind=trace_pb2.Span.SpanKind.Name(s.kind).removeprefix("SPAN_KIND_"),
                        status=trace_pb2.Status.StatusCode.Name(s.status.code).removeprefix("STATUS_CODE_"),
                        status_message=s.status.message, attributes=_attributes(s.attributes), resource=resource,
                        events=[e.name for e in s.events], start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano))
        with self._lock:
            self.requests += 1
            self.span_count += len(got)
            self.spans.extend(got)

    def spans_named(self, name: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.name == name]

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        """Every span received of one trace."""
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """An :class:`OtlpReceiver` on loopback for one test, closed after it; skips the test when the
    ``opentelemetry`` extra is not installed."""
    pytest.importorskip("opentelemetry.proto.collector.trace.v1", reason="the opentelemetry extra is not installed")
    with OtlpReceiver() as receiver:
        yield receiver


def tracing_env(receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    """The environment of a ``signpeer serve`` that exports its traces to ``receiver``. Batches
    leave every 50 ms instead of the SDK's 5 s, so a test waits little."""
    return {"SIGNPEER_TRACING": "otlp", "SIGNPEER_TRACING_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50",
            **extra}


def request_spans(receiver: OtlpReceiver, request_id: str, names: set[str], timeout: float = 15,
                  unique: bool = True) -> dict[str, ReceivedSpan]:
    """The spans of the request the client got ``request_id`` (``X-Request-ID``) for, by name, once
    all of ``names`` came. With ``unique``, a span name twice in one request is an error."""

    def spans() -> dict[str, ReceivedSpan]:  # empty until they all came
        roots = [s for s in receiver.spans_named("signpeer.request") if s.attributes["signpeer.request_id"] == request_id]
        if not roots:
            return {}
        trace = receiver.trace(roots[0].trace_id)
        got = {s.name: s for s in trace}
        assert not unique or len(got) == len(trace), f"a span name twice in one request: {[s.name for s in trace]}"
        return got if names <= got.keys() else {}

    return wait_until(spans, timeout=timeout, what=f"the spans {sorted(names)} of request {request_id}")

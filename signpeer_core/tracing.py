"""Optional OpenTelemetry traces of signing requests: the seam the core and the plugins use.

Off and free unless the ``opentelemetry`` extra is installed (``pip install
signpeer-core[opentelemetry]``) *and* the settings ask for it (``tracing = "otlp"``). Then each
server process, after it was spawned, makes its own tracer provider (:func:`start`) that sends
spans in batches over OTLP/HTTP (protobuf) from a background thread; the standard ``OTEL_*``
environment variables of the SDK apply where the settings leave a value open
(docs/monitoring.md, "Tracing").

What a signing request costs with tracing off: the :class:`Pipeline` is the plain one (the
traced subclass below is made only when tracing is on), the HTTP app has no trace-context
middleware, and a signer checks ``self._tracer is not None`` once around the signature; the
plugins' :func:`span` returns a shared do-nothing object after one ``is None`` check.

Spans of one request (names and attributes: docs/monitoring.md)::

    signpeer.request            the whole request (X-Request-ID as signpeer.request_id)
      signpeer.parse            the transport's parsing (reading the body)
      signpeer.authorize        AUTHTYPE
      signpeer.token.acquire    tokens that hand out keys per request (one-time keys: below)
        signpeer.onetime.keygen / .csr / .ca (signpeer.ra.wait) — the one-time plugin's stages
      signpeer.token.sign       the signature in the token
      signpeer.token.release    (signpeer.onetime.delete)

A W3C ``traceparent`` (and ``tracestate``) sent by the client makes the request span a child of
the client's span (the propagators of ``OTEL_PROPAGATORS``, W3C trace context by default).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from signpeer_core.errors import ConfigurationError, SignpeerError
from signpeer_core.pipeline import Caller, Parse, Pipeline, TransportRequest, current_request_id, new_request_id

if TYPE_CHECKING:
    from signpeer_core.runtime import Runtime
    from signpeer_core.settings import Settings
    from signpeer_core.workermetrics import SigningMetrics
    from signpeer_core.workers import SignRequest, SignResponse, Worker

__all__ = ["MODES", "tracer", "check", "start", "shutdown", "span", "recording", "make_pipeline", "TraceContextMiddleware"]

log = logging.getLogger("signpeer.tracing")

#: ``tracing`` setting values: ``off`` (default) or ``otlp`` (OTLP over HTTP, protobuf).
MODES = ("off", "otlp")
#: The path of the traces in an OTLP/HTTP receiver, added to a ``tracing_endpoint`` without one.
TRACES_PATH = "/v1/traces"
INSTALL_HINT = "pip install 'signpeer-core[opentelemetry]'"

#: Seconds the server's shutdown waits for spans still queued when the receiver does not take
#: them; then the exporter stops retrying and they are dropped.
SHUTDOWN_GRACE = 3.0
#: The exporter's failures (a receiver down) in the server log: one line per logger a minute.
LOG_INTERVAL = 60.0
_EXPORT_LOGGERS = ("opentelemetry.exporter.otlp.common.http", "opentelemetry.exporter.otlp.proto.http.trace_exporter",
                   "opentelemetry.sdk._shared_internal")

#: This process's tracer while tracing is on; None when off (the one check on the hot path).
tracer: Any = None
_provider: Any = None
_exporter: Any = None


# -- configuration ------------------------------------------------------------------------------

def _mode(settings: Settings) -> str:
    mode = settings.tracing.strip().lower() or "off"
    if mode not in MODES:
        raise ConfigurationError(f"setting 'tracing' must be one of {', '.join(MODES)}, not {settings.tracing!r}")
    return mode


def check(settings: Settings) -> bool:
    """Whether the settings turn tracing on; a :class:`ConfigurationError` says what is wrong
    (an unknown mode, a sample ratio outside 0..1, the extra not installed). ``serve`` calls it
    before anything listens."""
    if _mode(settings) == "off" or _sdk_disabled():
        return False
    if not 0.0 <= settings.tracing_sample_ratio <= 1.0:
        raise ConfigurationError(f"setting 'tracing_sample_ratio' must be between 0 and 1, not "
                                 f"{settings.tracing_sample_ratio}")
    if settings.tracing_endpoint and not settings.tracing_endpoint.startswith(("http://", "https://")):
        raise ConfigurationError(f"setting 'tracing_endpoint' must be an http:// or https:// URL of an OTLP/HTTP "
                                 f"receiver, not {settings.tracing_endpoint!r}")
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(f"tracing = \"{settings.tracing}\" needs the OpenTelemetry packages ({exc.name} is "
                                 f"missing): {INSTALL_HINT}, or set tracing = \"off\"") from None
    return True


def _sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def endpoint_url(value: str) -> str:
    """``tracing_endpoint`` as the exporter's URL: a URL without a path gets ``/v1/traces``."""
    from urllib.parse import urlsplit

    return value.rstrip("/") + TRACES_PATH if urlsplit(value).path in ("", "/") else value


def start(settings: Settings) -> bool:
    """Make this process's tracer provider when the settings turn tracing on (call it in each
    server process after it was forked or spawned, before its :class:`Services` opens)."""
    global tracer, _provider, _exporter
    if not check(settings):
        return False
    if _provider is not None:
        return True
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from signpeer_core import __version__

    attributes: dict[str, Any] = {"service.version": __version__, "service.instance.id": f"{settings.node_id}/"
                                  f"{os.getpid()}", "signpeer.node": settings.node_id, "process.pid": os.getpid()}
    if settings.tracing_service_name:
        attributes["service.name"] = settings.tracing_service_name
    resource = Resource.create(attributes)
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "signpeer"}))  # neither setting nor OTEL_SERVICE_NAME
    # The ratio applies unless it is left at 1 and OTEL_TRACES_SAMPLER names the SDK's sampler.
    sampler = None
    if settings.tracing_sample_ratio != 1.0 or "OTEL_TRACES_SAMPLER" not in os.environ:
        sampler = ParentBased(TraceIdRatioBased(settings.tracing_sample_ratio))
    provider = TracerProvider(resource=resource, sampler=sampler)
    exporter = OTLPSpanExporter(endpoint=endpoint_url(settings.tracing_endpoint) if settings.tracing_endpoint
                                else None)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    for name in _EXPORT_LOGGERS:
        logging.getLogger(name).addFilter(_RateLimit(LOG_INTERVAL))
    _provider, _exporter = provider, exporter
    trace.set_tracer_provider(provider)  # other libraries' instrumentation reports to it too
    tracer = provider.get_tracer("signpeer", __version__)
    log.info("tracing on: OTLP/HTTP to %s, sample ratio %g", getattr(exporter, "_endpoint", "?"),
             settings.tracing_sample_ratio)
    return True


def shutdown() -> None:
    """Send what is still queued and stop (the server's shutdown; blocking). A receiver that
    does not take the spans within :data:`SHUTDOWN_GRACE` seconds does not hold the stop up: the
    exporter is stopped (its retries end) and the rest is dropped."""
    global tracer, _provider, _exporter
    provider, exporter, _provider, _exporter, tracer = _provider, _exporter, None, None, None
    if provider is None:
        return
    timer = threading.Timer(SHUTDOWN_GRACE, exporter.shutdown)
    timer.daemon = True
    timer.start()
    try:
        provider.shutdown()
    finally:
        timer.cancel()


class _RateLimit(logging.Filter):
    """Lets one record through per ``interval`` seconds (a receiver that is down would otherwise
    write a line per retry of every batch)."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        self.last = -interval
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return False
        if self.suppressed:
            record.msg = f"{record.msg} ({self.suppressed} similar messages in the last minute not logged)"
            self.suppressed = 0
        self.last = now
        return True


# -- spans ------------------------------------------------------------------------------------

class _NoSpan:
    """What :func:`span` gives when tracing is off: every call does nothing."""

    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        return None

    def set_attribute(self, key: str, value: Any) -> None:
        return None

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        return None


_NO_SPAN = _NoSpan()


class _Span:
    """A child span of the current one for the ``with`` block; made current inside it. A failure
    sets its status to ERROR with the message and ``error.type`` (a traceback only for errors
    that are not the error tree's: those are bugs)."""

    __slots__ = ("name", "attributes", "kind", "span", "_token")

    def __init__(self, name: str, attributes: Mapping[str, Any] | None, kind: Any = None) -> None:
        self.name = name
        self.attributes = attributes
        self.kind = kind

    def __enter__(self) -> Any:
        from opentelemetry.context import attach
        from opentelemetry.trace import set_span_in_context

        options = {"kind": self.kind} if self.kind is not None else {}
        self.span = tracer.start_span(self.name, attributes=self.attributes, **options)
        self._token = attach(set_span_in_context(self.span))
        return self.span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        from opentelemetry.context import detach

        try:
            if exc is not None:
                failed(self.span, exc)
        finally:
            detach(self._token)
            self.span.end()


def span(name: str, attributes: Mapping[str, Any] | None = None) -> Any:
    """``with span("signpeer.myplugin.stage", {...}) as s:`` — a child span of the current one
    while tracing is on, a shared do-nothing object otherwise (``s.set_attribute(key, value)``
    and ``s.add_event(name, attributes)`` work on both). Name it ``signpeer.<plugin>.<stage>``;
    attribute values from bounded sets or the request's own facts, never secrets."""
    if tracer is None:
        return _NO_SPAN
    from opentelemetry.trace import get_current_span

    if not get_current_span().is_recording():  # outside a request, or in one the sampler left out
        return _NO_SPAN
    return _Span(name, attributes)


def recording() -> bool:
    """Whether :func:`span` records spans here and now (tracing on, inside a sampled request): a
    plugin that has a faster path without its stages' spans takes it only when this is False."""
    if tracer is None:
        return False
    from opentelemetry.trace import get_current_span

    return bool(get_current_span().is_recording())


def failed(target: Any, exc: BaseException) -> None:
    """Mark ``target`` (a span) failed by ``exc``."""
    from opentelemetry.trace import Status, StatusCode

    if isinstance(exc, SignpeerError):
        target.set_attribute("error.type", type(exc).__name__)
        target.set_attribute("signpeer.status_code", exc.status)
        target.set_status(Status(StatusCode.ERROR, exc.message))
    elif isinstance(exc, GeneratorExit | KeyboardInterrupt):
        return
    elif isinstance(exc, asyncio.CancelledError):  # a timeout around it, or the client went away
        target.set_attribute("error.type", "cancelled")
        target.set_status(Status(StatusCode.ERROR, "cancelled (a time limit, or the client went away)"))
    else:
        target.set_attribute("error.type", type(exc).__qualname__)
        target.record_exception(exc)
        target.set_status(Status(StatusCode.ERROR, type(exc).__name__))


# -- the pipeline and the HTTP app --------------------------------------------------------------

def make_pipeline(runtime: Runtime, metrics: SigningMetrics | None) -> Pipeline:
    """The process's pipeline: the traced one while tracing is on, else the plain one."""
    return (_TracedPipeline if tracer is not None else Pipeline)(runtime, metrics)


class _TracedPipeline(Pipeline):
    """The pipeline with spans: the request, its parsing and its authorization."""

    async def process(self, worker: str | int, request: TransportRequest | Parse, caller: Caller,
                      request_id: str | None = None) -> SignResponse:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind

        if request_id is None:
            request_id = current_request_id.get() or new_request_id()
        parent = trace.get_current_span().get_span_context()
        # A request from a client (or no parent) is a server span; a worker called by another
        # worker of this process (a CMS signer's TSA_WORKER) runs inside that request's span.
        kind = SpanKind.INTERNAL if parent.is_valid and not parent.is_remote else SpanKind.SERVER
        with _Span("signpeer.request", {"signpeer.request_id": request_id}, kind) as root:
            if not root.is_recording():  # left out by the sampler: no attributes, no child spans
                return await super().process(worker, request, caller, request_id)
            attributes: dict[str, Any] = {"signpeer.transport": caller.transport}
            if caller.remote_address:
                attributes["client.address"] = caller.remote_address
            try:
                target: Worker | None = self.runtime.get(worker)
            except SignpeerError:
                target = None
            if target is not None:
                attributes.update({"signpeer.worker.name": target.name, "signpeer.worker.id": target.id,
                                   "signpeer.worker.type": target.type_name})
            else:
                attributes["signpeer.worker.name"] = str(worker)[:128]
            root.set_attributes(attributes)
            if not isinstance(request, TransportRequest):
                request = _traced_parse(request)
            result = await super().process(worker, request, caller, request_id)
            root.set_attribute("signpeer.status_code", 200)
            if target is not None and target.chain:
                root.set_attribute("signpeer.signer.serial", format(target.chain[0].serial_number, "x"))
        return result

    async def _authorize(self, target: Worker, sign_request: SignRequest, parsed: TransportRequest) -> None:
        authorizer = target.authorizer
        with span("signpeer.authorize", {"signpeer.authtype": type(authorizer).__name__ if authorizer else "-"}) as s:
            await super()._authorize(target, sign_request, parsed)
            if sign_request.username:
                s.set_attribute("enduser.id", sign_request.username)


def _traced_parse(parse: Parse) -> Parse:
    async def traced() -> TransportRequest:
        with _Span("signpeer.parse", None) as s:
            parsed = await parse()
            s.set_attribute("signpeer.request.size", len(parsed.data))
            return parsed

    return traced


class TraceContextMiddleware:
    """Pure ASGI: the client's ``traceparent``/``tracestate`` (and ``baggage``) become the
    current context of its request, so that the request span continues the client's trace.
    Installed only while tracing is on."""

    _HEADERS = (b"traceparent", b"tracestate", b"baggage")

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", ())
                   if name in self._HEADERS} if scope["type"] == "http" else None
        if not carrier:
            await self.app(scope, receive, send)
            return
        from opentelemetry import context, propagate

        token = context.attach(propagate.extract(carrier))
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)

"""The processing pipeline: one signing request through one worker, whatever transport brought it.

SignServer's ``WorkerProcessImpl.process`` is the model. For every request, in this order:

1. look the worker up by id or name (memory: the :class:`~signpeer_core.runtime.Runtime`);
2. let the transport parse the request (:class:`TransportRequest`), after the lookup so that an
   unknown worker is a 404 whatever the body says;
3. authorize per the worker's ``AUTHTYPE`` (:mod:`signpeer_core.auth`): a bearer-token
   authorizer gets the request's bearer token (which goes no further), the others the password;
4. clear what the worker may not see: a user name reaches the worker only when the authorizer
   established it (``identifies_user``: USERNAME, a token's claims; one-time keys put it in
   certificates);
5. refuse when the worker is disabled or offline (:meth:`Worker.check_ready`, memory only);
6. process: acquire the key, sign, release (:meth:`Worker.process`; a signer acquires and
   releases through its token, and tokens that keep their keys skip that round);
7. write one line in the worker log (logger ``signpeer.worker``), on success and failure alike.

A transport (the REST API in :mod:`signpeer_core.rest`, a plugin's route) only parses its
request into a :class:`Caller` (the connection's facts) and a :class:`TransportRequest` (the
request's), calls :meth:`Pipeline.process`, and serializes the :class:`SignResponse` or lets
the :class:`~signpeer_core.errors.SignpeerError` become its error answer.

The path is cheap and touches neither the database nor a hook: the request id is a counter,
a :class:`Caller` can be kept per connection, the worker log line is made only when the logger
is on, and is handed to the server's log writer directly, formatted when the batch is written
(:mod:`signpeer_core.logwriter`). With tracing on, the process's pipeline is
:mod:`signpeer_core.tracing`'s subclass (spans around the request, the parsing and the
authorization); off, this class runs as it is.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from signpeer_core.auth import BearerAuthorizer, ClientCertAuthorizer, NoAuthorizer
from signpeer_core.errors import ClientAbortError, SignpeerError
from signpeer_core.identifiers import shorten
from signpeer_core.identity import CertificateIdentity
from signpeer_core.logwriter import direct_writer
from signpeer_core.workers import SignRequest, SignResponse

if TYPE_CHECKING:
    from signpeer_core.runtime import Runtime
    from signpeer_core.workermetrics import SigningMetrics
    from signpeer_core.workers import Worker

_WORKER_LOG = "signpeer.worker"
worker_log = logging.getLogger(_WORKER_LOG)

_NO_AUTH = NoAuthorizer()

_LINE = ("request_id=%(request_id)s worker=%(worker)s client=%(client)r remote=%(remote)s outcome=%(outcome)s "
         "duration_ms=%(duration_ms).2f")
_LINE_WITH_ERROR = _LINE + " error=%(error)r"

# Request ids: a random per-process prefix and a counter; unique across processes, and far
# cheaper than uuid4 on a path that costs tens of microseconds in total.
_ID_PREFIX = secrets.token_hex(4)
_counter = itertools.count(1)


def new_request_id() -> str:
    """A request id unique across the processes of a server."""
    return f"{_ID_PREFIX}-{next(_counter)}"


#: The id of the HTTP request being served: the server's outermost middleware sets it (and sends
#: it to the client as ``X-Request-ID``); the pipeline takes it when the transport names none,
#: and the JSON log format writes it on every line of the request.
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("signpeer_request_id", default=None)


@dataclass(slots=True)
class Caller:
    """What the transport knows about who sent a request before reading it.

    Usually the same for every request of a connection, so a transport may keep one per
    connection (the REST API does).
    """

    transport: str  #: e.g. "REST"; for logs and for workers that care
    client: CertificateIdentity | None = None  #: the verified TLS client certificate, if any
    remote_address: str | None = None


@dataclass(slots=True)
class TransportRequest:
    """One signing request as a transport parsed it."""

    data: bytes
    metadata: dict[str, str] = field(default_factory=dict)
    username: str | None = None  #: as sent (HTTP Basic); reaches the worker only if AUTHTYPE checked it
    password: str | None = None
    #: ``Authorization: Bearer`` credential; only a :class:`~signpeer_core.auth.BearerAuthorizer`
    #: reads it, it never reaches the worker nor a log line
    bearer_token: str | None = field(default=None, repr=False)


#: A transport's parsing step, run by the pipeline after the worker lookup.
Parse = Callable[[], Awaitable[TransportRequest]]


class Pipeline:
    """Processes signing requests for the workers of one runtime (one per process)."""

    def __init__(self, runtime: Runtime, metrics: SigningMetrics | None = None) -> None:
        self.runtime = runtime
        #: Counts and times every request (:mod:`signpeer_core.workermetrics`); None: metrics off.
        self.metrics = metrics
        #: Whether :meth:`_authorize` is this class's own (a subclass, e.g. the tracing pipeline's
        #: span around it, must see every request): then a NOAUTH worker's is done inline, and a
        #: CLIENTCERT worker's for a certificate its rules accept (:meth:`ClientCertAuthorizer.accepts`).
        self._inline_authorize = type(self)._authorize is Pipeline._authorize

    async def process(self, worker: str | int, request: TransportRequest | Parse, caller: Caller,
                      request_id: str | None = None) -> SignResponse:
        """Run one request through ``worker`` (an id or a name); see the module docstring.

        ``request``: the parsed request, or the transport's parsing coroutine function (its
        errors then count as the request's and are logged with it). ``request_id``: one the
        transport already made (to name it in its own error answers), else the HTTP request's
        (:data:`current_request_id`), else a new one.
        Raises a :class:`SignpeerError` (or, on a bug, anything) after logging it.
        """
        started = time.perf_counter()
        if request_id is None:
            request_id = current_request_id.get() or new_request_id()
        username: str | None = None
        worker_name = str(worker)
        target = None
        try:
            target = self.runtime.get(worker)
            worker_name = target.name
            parsed = request if isinstance(request, TransportRequest) else await request()
            username = parsed.username
            client = caller.client
            # Positional (the fields' order): keywords cost a dict per call in the class call, twice the time.
            if client is None:
                sign_request = SignRequest(parsed.data, request_id, parsed.metadata, username, None,
                                           caller.remote_address)
            else:
                sign_request = SignRequest(parsed.data, request_id, parsed.metadata, username, client.certificate,
                                           caller.remote_address, None, client.issuer_key_id)
            authorizer = target.authorizer
            if self._inline_authorize and (
                    authorizer is None or authorizer.__class__ is NoAuthorizer  # NOAUTH
                    # CLIENTCERT, the certificate accepted: the decision authorize() makes on the same
                    # certificate and CA key id, remembered per connection identity (a refusal: below).
                    or (authorizer.__class__ is ClientCertAuthorizer and client is not None
                        and authorizer.accepts(client))):
                sign_request.username = None  # only a checked name reaches the worker (see _authorize)
            else:
                await self._authorize(target, sign_request, parsed)
            target.check_ready()
            result = await target.process(sign_request)
        except ClientAbortError as exc:
            self.log(request_id, worker_name, username, caller, "ABORTED", started, exc.message)
            raise
        except SignpeerError as exc:
            self.log(request_id, worker_name, username, caller, f"FAILED {exc.status}", started, exc.message)
            if self.metrics is not None:
                self.metrics.done(target, exc.status, started)
            raise
        except Exception:
            self.log(request_id, worker_name, username, caller, "FAILED 500", started, "internal error")
            if self.metrics is not None:
                self.metrics.done(target, 500, started)
            raise
        self.log(request_id, worker_name, sign_request.username, caller, "SUCCESS", started, None)
        if self.metrics is not None:
            self.metrics.done(target, 200, started)
        return result

    async def _authorize(self, target: Worker, sign_request: SignRequest, parsed: TransportRequest) -> None:
        """Step 3 and 4: check the caller per the worker's ``AUTHTYPE``; keep only a checked user name."""
        authorizer = target.authorizer or _NO_AUTH
        if isinstance(authorizer, BearerAuthorizer):
            sign_request.username = None  # the token names the user, not a Basic header
            await authorizer.check_token(sign_request, parsed.bearer_token)
        else:
            await authorizer.check(sign_request, parsed.password)
            if not authorizer.identifies_user:
                # Only a checked name may reach the worker (one-time keys put it in certificates).
                sign_request.username = None

    def refused(self, request_id: str, worker: str | int, caller: Caller, error: SignpeerError,
                started: float) -> None:
        """Log a request the transport refused before it reached :meth:`process` (e.g. a missing
        header), so that every signing request has its worker log line."""
        self.log(request_id, str(worker), None, caller, f"FAILED {error.status}", started, error.message)
        if self.metrics is not None:
            target = self.runtime.by_name.get(str(worker).lower())
            if target is None and str(worker).isdigit():
                target = self.runtime.by_id.get(int(worker))
            self.metrics.done(target, error.status, started)

    @staticmethod
    def log(request_id: str, worker: str, username: str | None, caller: Caller, outcome: str, started: float,
            message: str | None) -> None:
        """One worker log line (``started``: ``time.perf_counter()`` when the request came in)."""
        if not worker_log.isEnabledFor(logging.INFO):
            return
        if len(worker) > 128 or " " in worker or "=" in worker or '"' in worker or "'" in worker:
            worker = repr(shorten(worker, 128))  # a name from the request path: one short field, whatever it holds
        duration = (time.perf_counter() - started) * 1000
        writer = direct_writer(worker_log)
        if writer is None or writer.writes_fields:
            # A number of the line's fields (the JSON format): two decimals. The text format's
            # template writes it with .2f, the same text whether rounded first or not (round() costs
            # about 2,600 instructions a line).
            duration = round(duration, 2)
        cert = caller.client
        client = f"user:{username}" if username else (f"cert:{cert.subject}" if cert else "-")
        fields: dict[str, object] = {"request_id": request_id, "worker": worker, "client": client, "remote": caller.remote_address,
                  "outcome": outcome, "duration_ms": duration}
        # One mapping as the argument: the text format fills the message from it, the JSON
        # format (logconfig.py) writes its keys as the line's fields.
        template = _LINE
        if message:
            fields["error"] = message
            template = _LINE_WITH_ERROR
        if writer is not None:  # the server's log writer alone takes this logger's lines: the short way
            writer.add(_WORKER_LOG, template, fields)
        else:
            worker_log.info(template, fields)

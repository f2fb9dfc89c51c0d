"""The direct signing path: a REST JSON signing request to a signer that signs inline, whole, in
one coroutine.

Most signing requests are the same: ``POST …/workers/{idOrName}/process`` with a JSON
ProcessRequest without options, for a ``PlainSigner`` whose token has a prepared signer
(:meth:`CryptoToken.prepared_signer`: the soft token, the test kit's memory token, PKCS#11 with
cached keys) and to which the caller may sign without credentials in the request:
``AUTHTYPE=NOAUTH``, or ``CLIENTCERT`` (the default) with a TLS client certificate the worker's
authorized clients accept. Through the general path
(:class:`~signpeer_core.pipeline.Pipeline`), such a request costs a parsing coroutine, a
:class:`TransportRequest`, a :class:`SignRequest`, the worker's ``process`` coroutine and a
:class:`SignResponse` around one call of the prepared signer: about a tenth of the server's work
per request outside the signature. :class:`DirectSigning` does the same steps in one coroutine:
the body read and parsed, the prepared signer called, the token time observed, the worker log
line (:meth:`Pipeline.log`, the same line), the request counted (the same metrics), the
ProcessResponse sent (:func:`~signpeer_core.processjson.signature_response`, the same bytes).

Only what the general path would do the same way is taken, decided before the body is read
(:meth:`DirectSigning.find`, memory only): the worker exists, is ready (:meth:`Worker.check_ready`
would pass), has a prepared signer it would use now (:meth:`Worker.ready_prepared`), and either
needs no authorizer (NOAUTH) or is a ``CLIENTCERT`` worker whose rules accept the connection's
client certificate (:meth:`ClientCertAuthorizer.accepts`: the decision
:meth:`~ClientCertAuthorizer.authorize` makes in the pipeline, remembered per connection); and
the process's pipeline is the untraced one (the traced one has spans around its steps). The log
line names the certificate's subject, as the pipeline's does (a CLIENTCERT worker never passes a
user name on). Everything else, and every turn the request takes afterwards, goes
to :meth:`Pipeline.process`, which answers, logs and counts as it always did: a body that cannot
be read or parsed (its error is raised inside the pipeline, so it is logged and counted as the
request's), a request with metadata (request options), a prepared signer that declines (None) or
fails; a request to a ``CLIENTCERT`` worker without a client certificate or with one its rules
do not accept (the pipeline refuses it), to a ``USERNAME`` worker or to a plugin's authorizer
type. A signing request here touches no database and no hook, as on the general path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from signpeer_core.app import guarded_head
from signpeer_core.auth import ClientCertAuthorizer, NoAuthorizer
from signpeer_core.errors import SignpeerError
from signpeer_core.formupload import decode_base64
from signpeer_core.httpserver import receive_body
from signpeer_core.largebodies import LARGE_BODY
from signpeer_core.pipeline import Caller, Pipeline, TransportRequest
from signpeer_core.processjson import process_request_of, signature_response

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from signpeer_core.signers import BaseSigner
    from signpeer_core.tokens import PreparedSigner
    from signpeer_core.workers import SignResponse, Worker


class DirectSigning:
    """The direct path of one process's pipeline (see the module docstring)."""

    __slots__ = ("pipeline", "runtime", "_enabled", "_workers", "_replacements")

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.runtime = pipeline.runtime
        #: A subclass (the tracing pipeline) wraps its steps in spans: then every request goes its way.
        self._enabled = type(pipeline) is Pipeline
        #: What :meth:`Runtime.get` answered for each ``id_or_name`` a request spelt, while the
        #: runtime has put no worker in its maps since (:attr:`Runtime.replacements` is the one in
        #: :attr:`_replacements`): one dictionary look-up per request instead of the
        #: lower-casing and checks of a name. Only the worker's own NAME and id are remembered (at
        #: most :data:`_REMEMBER`, then it starts over); another spelling is looked up each time.
        self._workers: dict[str, Worker] = {}
        self._replacements = -1

    def find(self, id_or_name: str, caller: Caller) -> tuple[BaseSigner, PreparedSigner] | None:
        """The worker and its prepared signer when a request without options (and without an
        ``Authorization`` header) from ``caller`` to ``id_or_name`` may take the direct path now;
        None when it must go through the pipeline."""
        if not self._enabled:
            return None
        runtime = self.runtime
        workers = self._workers
        if self._replacements != runtime.replacements:  # loaded again since: look every name up afresh
            workers.clear()
            self._replacements = runtime.replacements
        worker = workers.get(id_or_name)
        if worker is None:
            try:
                worker = runtime.get(id_or_name)
            except SignpeerError:  # unknown: the pipeline answers it
                return None
            # Only the worker's own spelling of its name or id: a path may pad a name with blanks
            # (Runtime.get strips them) to any length, and find runs before authorization.
            if id_or_name == worker.name or id_or_name == str(worker.id):
                if len(workers) >= _REMEMBER:
                    workers.clear()
                workers[id_or_name] = worker
        prepared = worker.ready_prepared()
        if prepared is None:
            return None
        authorizer = worker.authorizer
        if authorizer is not None and type(authorizer) is not NoAuthorizer:
            if type(authorizer) is not ClientCertAuthorizer:  # USERNAME, a plugin's type, a subclass
                return None
            # CLIENTCERT: the pipeline's decision (ClientCertAuthorizer.authorize), without a SignRequest.
            client = caller.client
            if client is None or not authorizer.accepts(client):
                return None  # the pipeline refuses it, with its message, log line and counts
        return worker, prepared  # type: ignore[return-value]  # only signers have a prepared signer

    async def process(self, found: tuple[BaseSigner, PreparedSigner], id_or_name: str, scope: MutableMapping[str, Any],
                      receive: Any, send: Any, caller: Caller, request_id: str, started: float) -> SignResponse | None:
        """Read, parse and sign the request and answer it; None when answered. Anything the
        direct path does not take goes to the pipeline, whose result (or error) is returned (raised)."""
        worker, prepared = found
        pipeline = self.pipeline
        try:
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                raw = message.get("body", b"")  # the usual case: the whole body in one message
            else:
                raw = await receive_body(receive, message)
            payload = _base64_document(raw)
            if payload is None:  # anything else: the endpoint's reading (processjson.py)
                payload, metadata = process_request_of(raw)
            else:
                metadata = _NO_METADATA
        except Exception as exc:  # raised again inside the pipeline, which logs and counts it
            return await pipeline.process(id_or_name, _raising(exc), caller, request_id)
        if metadata:  # request options: the signer checks them
            return await pipeline.process(id_or_name, TransportRequest(payload, metadata), caller, request_id)
        try:
            signed = prepared(payload)
        except Exception:  # the general path calls it again and reports the error as always
            signed = None
        if signed is None:
            return await pipeline.process(id_or_name, TransportRequest(payload, metadata), caller, request_id)
        signature, seconds = signed
        observe = worker.observe_token
        if observe is not None:
            observe(seconds)
        pipeline.log(request_id, worker.name, None, caller, "SUCCESS", started, None)
        metrics = pipeline.metrics
        if metrics is not None:
            metrics.done(worker, 200, started)
        body = signature_response(signature, request_id, worker.chain[0])
        await send(guarded_head(scope, 200, [(b"content-length", b"%d" % len(body)),
                                             (b"content-type", b"application/json")]))
        await send({"type": "http.response.body", "body": body})
        return None


_NO_METADATA: dict[str, str] = {}
#: How many worker names and ids :meth:`DirectSigning.find` remembers.
_REMEMBER = 1024


def _base64_document(raw: bytes | bytearray) -> bytes | None:
    """The document of ``{"data": "<base64>", "encoding": "BASE64"}`` (the usual request, with
    nothing else in it), read as :func:`~signpeer_core.processjson.process_request_of` reads it;
    None for any other body (that function then reads it, and refuses it with its message)."""
    if len(raw) >= LARGE_BODY:
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(body) is not dict or len(body) != 2 or body.get("encoding") != "BASE64":
        return None
    data = body.get("data")
    return decode_base64(data) if type(data) is str else None


def _raising(exc: Exception) -> Any:
    """A pipeline parsing step that raises ``exc`` (what reading the body raised)."""

    async def parse() -> TransportRequest:
        raise exc

    return parse

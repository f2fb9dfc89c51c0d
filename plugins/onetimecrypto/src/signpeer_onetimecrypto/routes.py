"""The RA operations of the peer protocol, served behind the peer endpoint's guard.

They are added to ``/signserver/peer/v1`` with ``signpeer_peerconnector.routes.register_operation``,
so a CA peer gets exactly the same treatment as for renewal: client certificate required,
recorded in the incoming-connections registry, and allowed only with
``PEERS_INCOMING_ENABLED=true`` and a Peer System rule in ``WSPEERS`` (403 "Unauthorized"
otherwise).

* ``POST /ra/claim`` — long poll. Body ``{"max": 1..100, "wait": 0..60, "queues": [...],
  "lease": 1..300}`` (all optional; defaults 1, 25 s, every queue, 10 s). Answers
  ``{"requests": [...], "leaseSeconds": n}`` as soon as there is work, or an empty list after
  ``wait`` seconds. Each request is the JSON of :class:`CertificateRequest` plus ``id`` and
  ``claims``.
* ``POST /ra/requests/{id}/result`` — ``{"chain": ["-----BEGIN CERTIFICATE-----...", ...]}``
  (leaf first; one PEM string with all of them also works) or ``{"error": "reason"}``.
  200 ``{"state": "answered"}``; 409 when the request is already answered or past its deadline
  (the answer is discarded, nothing changes); 404 for an unknown id; 400 for a chain whose leaf
  is not for the request's public key.
"""

from __future__ import annotations

import base64
import json
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from signpeer_core.errors import BadRequestError, ConflictError, NotFoundError
from signpeer_core.keys import load_certificates, public_key_der
from signpeer_onetimecrypto.ra import DEFAULT_LEASE, chain_to_pem, hub_for
from signpeer_onetimecrypto.raqueue import RaQueue

if TYPE_CHECKING:
    from signpeer_peerconnector.authz import PeerIdentity

CLAIM_PATH = "/ra/claim"
RESULT_PATH = "/ra/requests/{request_id}/result"
#: How often an idle long poll re-checks the database (requests queued by another process).
IDLE_POLL = 0.05
MAX_WAIT = 60.0


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise BadRequestError(f"'{name}' must be a number from {low:g} to {high:g}")
    return float(value)


async def claim(request: Request, identity: PeerIdentity, service: Any) -> Response:
    """Long poll for queued RA requests (see the module docstring)."""
    from signpeer_peerconnector.routes import json_body  # served only with the peer connector

    body = await json_body(request)
    limit = int(_number(body, "max", 1, 1, 100))
    wait = _number(body, "wait", 25, 0, MAX_WAIT)
    lease = _number(body, "lease", DEFAULT_LEASE, 1, 300)
    queues = body.get("queues") or None
    if queues is not None and (not isinstance(queues, list) or not all(isinstance(q, str) for q in queues)):
        raise BadRequestError("'queues' must be a list of queue (CANAME) names")
    services = service.services
    ra = RaQueue(services.store.database)
    hub = hub_for(services)
    claimer = identity.subject
    end = time.monotonic() + wait
    first = True
    while True:
        event = hub.claimer_event()
        try:
            now = time.time()
            # A read first: idle polls must not take the write lock every 50 ms.
            if first or await anyio.to_thread.run_sync(ra.has_work, queues, now, lease):
                rows = await anyio.to_thread.run_sync(ra.claim, queues, claimer, now, lease, limit)
                first = False
                if rows:
                    return JSONResponse({"requests": [_offer(r) for r in rows], "leaseSeconds": lease})
            left = end - time.monotonic()
            if left <= 0:
                return JSONResponse({"requests": [], "leaseSeconds": lease})
            with anyio.move_on_after(min(IDLE_POLL, left)):
                await event.wait()
        finally:
            hub.drop_claimer(event)


def _offer(row: Any) -> dict[str, Any]:
    data = json.loads(row.request)
    data.update({"id": row.id, "queue": row.queue, "claims": row.claims, "deadline": row.deadline})
    return data


async def result(request: Request, identity: PeerIdentity, service: Any) -> Response:
    """The CA's answer to one request: the chain, or its refusal."""
    from signpeer_peerconnector.routes import json_body

    rid = request.path_params["request_id"]
    body = await json_body(request)
    services = service.services
    ra = RaQueue(services.store.database)
    row = await anyio.to_thread.run_sync(ra.request, rid)
    if row is None:
        raise NotFoundError(f"no RA request '{rid}'")
    chain_pem: str | None = None
    error: str | None = None
    if body.get("error"):
        error = str(body["error"])[:2000]
    else:
        raw = body.get("chain")
        if isinstance(raw, list):
            raw = "\n".join(str(c) for c in raw)
        if not isinstance(raw, str) or not raw.strip():
            raise BadRequestError("give the issued chain ({\"chain\": [PEM, ...]}, leaf first) or the CA's "
                                  "refusal ({\"error\": \"reason\"})")
        certs = load_certificates(raw.encode())
        wanted = base64.b64decode(json.loads(row.request)["publicKey"])
        if public_key_der(certs[0]) != wanted:
            raise BadRequestError(f"the first certificate is not for the public key of request {rid}; "
                                  "put the certificate issued for its CSR first")
        chain_pem = chain_to_pem(certs)
    accepted, now_row = await anyio.to_thread.run_sync(ra.answer, rid, identity.subject, time.time(),
                                                       chain_pem, error)
    if not accepted:
        assert now_row is not None
        state = now_row.effective_state(time.time())
        if state == "answered":
            raise ConflictError(f"RA request {rid} was already answered by '{now_row.answered_by}'; this answer "
                                "was discarded")
        raise ConflictError(f"RA request {rid} has expired (its signing request no longer waits); this answer "
                            "was discarded")
    hub_for(services).answered(rid)
    return JSONResponse({"id": rid, "state": "answered"})


_REGISTERED = False


def register() -> bool:
    """Add the RA operations to the peer endpoint (once per process). False without it."""
    global _REGISTERED
    if _REGISTERED:
        return True
    try:
        from signpeer_peerconnector.routes import register_operation
    except ImportError:
        return False
    register_operation(CLAIM_PATH, ("POST",), claim, name="ra_claim")
    register_operation(RESULT_PATH, ("POST",), result, name="ra_result")
    _REGISTERED = True
    return True

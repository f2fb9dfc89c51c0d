"""The RA operations of the peer protocol, served behind the peer endpoint's guard.

They are served under ``/signserver/peer/v1`` through the peer connector's hook
``signpeer_peer_routes`` (:func:`peer_routes`), so a CA peer gets exactly the same treatment as
for renewal: client certificate required,
recorded in the incoming-connections registry, and allowed only with
``PEERS_INCOMING_ENABLED=true`` and a Peer System rule in ``WSPEERS`` (403 "Unauthorized"
otherwise).

* ``POST /ra/claim`` — long poll. Body ``{"max": 1..100, "wait": 0..60, "queues": [...],
  "lease": 1..300, "answers": [...]}`` (all optional; defaults 1, 25 s, every queue, 10 s, none).
  Answers ``{"requests": [...], "leaseSeconds": n, "answers": [...]}`` as soon as there is work,
  or an empty list after ``wait`` seconds. A request queued in this process while the poll waits
  is handed to it already claimed (:meth:`.ra.PeersRAConnector.submit`): no claim statement. Each request is the JSON of :class:`CertificateRequest`
  plus ``id`` and ``claims``. ``answers`` (at most 100) are results of earlier claims, each
  ``{"id": ..., "chain": [...]}`` or ``{"id": ..., "error": "..."}`` as the result operation
  takes them: they are recorded before the poll looks for work (and in the same trip to a thread
  as its first claim; no claim at all while another poll of this process waits for the same
  queues), so a CA peer sends one request per certificate instead of two. The
  answer's ``answers`` says, in the same order, ``{"id", "state": "answered"}`` or ``{"id",
  "status": 409|404|400, "error": "..."}`` for each; it is there (empty) whenever the server
  takes answers this way, which is how a CA peer tells. ``process`` (this server process's tag)
  and ``processes`` (how many ``serve --workers`` runs) let a CA peer see which process holds
  each of its kept-alive poll connections and reconnect a poll that shares a process with another
  while a process has none (:class:`.raclient.RALoop`).
* ``POST /ra/requests/{id}/result`` — ``{"chain": ["-----BEGIN CERTIFICATE-----...", ...]}``
  (leaf first; one PEM string with all of them also works) or ``{"error": "reason"}``.
  200 ``{"state": "answered"}``; 409 when the request is already answered or past its deadline
  (the answer is discarded, nothing changes); 404 for an unknown id; 400 for a chain whose leaf
  is not for the request's public key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from signpeer_core.api import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    SignpeerError,
    check_encodable,
    client_certificate,
    format_dn,
    json_body,
    load_certificates,
    public_key_der,
    run_in_thread,
)
from signpeer_onetimecrypto.ra import DEFAULT_LEASE, chain_to_pem
from signpeer_onetimecrypto.rahub import RAHub, hub_for
from signpeer_onetimecrypto.raqueue import RaQueue, RaRequest

if TYPE_CHECKING:
    from signpeer_core.api import Services

CLAIM_PATH = "/ra/claim"
RESULT_PATH = "/ra/requests/{request_id}/result"
#: How often an idle long poll re-checks the database when no notification came: a safety net
#: (queued requests are notified to every process), and how a lease that ran out is noticed.
IDLE_POLL = 1.0
MAX_WAIT = 60.0


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise BadRequestError(f"'{name}' must be a number from {low:g} to {high:g}")
    return float(value)


def _peer(request: Request) -> str:
    """The calling CA peer (the peer guard has required and authorized its certificate)."""
    cert = client_certificate(request.scope)
    if cert is None:  # the guard refuses these first; kept for a route mounted without it
        raise BadRequestError("the RA operations need the CA peer's TLS client certificate")
    return format_dn(cert.subject)


#: Answers one claim may carry.
MAX_ANSWERS = 100


def _answers(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The ``answers`` of a claim: (request id, the result body) each."""
    raw = body.get("answers") or []
    if not isinstance(raw, list) or len(raw) > MAX_ANSWERS or not all(
            isinstance(a, dict) and isinstance(a.get("id"), str) and a["id"] for a in raw):
        raise BadRequestError(f"'answers' must be a list of at most {MAX_ANSWERS} results, each "
                              "{\"id\": \"...\", \"chain\": [...]} or {\"id\": \"...\", \"error\": \"...\"}")
    return [(check_encodable(a["id"], "the RA request id"), a) for a in raw]


async def claim(request: Request, services: Services) -> Response:
    """Long poll for queued RA requests (see the module docstring)."""
    body = await json_body(request, empty={})
    limit = int(_number(body, "max", 1, 1, 100))
    wait = _number(body, "wait", 25, 0, MAX_WAIT)
    lease = _number(body, "lease", DEFAULT_LEASE, 1, 300)
    queues = body.get("queues") or None
    if queues is not None and (not isinstance(queues, list) or not all(isinstance(q, str) for q in queues)):
        raise BadRequestError("'queues' must be a list of queue (CANAME) names")
    answers = _answers(body)
    ra = RaQueue(services.store.database)
    hub = hub_for(services)
    claimer = _peer(request)
    # Which server process answers (serve --workers N), so that a CA peer can spread its polls.
    where = {"process": hub.origin, "processes": services.settings.workers}
    end = time.monotonic() + wait
    first = True
    outcomes: list[dict[str, Any]] = []
    with hub.poll_slot(claimer):
        if not hub.is_ready:
            await anyio.to_thread.run_sync(hub.ready)
        # Before the first look: a request queued meanwhile wakes it (or, queued in this process
        # while the claim waits, is handed to it already claimed).
        event = hub.claimer_event(queues, claimer)
        try:
            # True right after a claim statement that found nothing: the poll then waits before
            # it looks again, as every poll does after its first claim (see below).
            claimed_nothing = False
            if answers:
                # The answers, then the first claim, in one trip to a thread. No claim statement
                # when another poll of this process waits for these queues (everything claimable
                # reaches that poll: see RAHub.another_waits), this one waits at least until its
                # timer's read (IDLE_POLL) and no polls are due to be recorded: this poll then
                # waits like that one (what is queued from now on wakes it).
                now = time.time()
                polls = hub.polls_due(claimer, now)
                look = bool(polls) or wait < IDLE_POLL or not hub.another_waits(event, queues)
                outcomes, rows = await run_in_thread(
                    _answer_then_claim, ra, hub, answers, claimer, queues, lease, limit, polls if look else None)
                first = False
                if rows:
                    return _claimed(rows, lease, outcomes, where)
                claimed_nothing = True
            while True:
                # Handed a request queued in this process: it is claimed already. Woken by a
                # request queued on one of our queues: claim at once. Woken by the slow timer: a
                # read first (a lease that ran out, a lost notification), so an idle poll does not
                # take the write lock. Right after a claim that found nothing, no read: that claim
                # was the look (what is queued since wakes this poll; a lease that runs out since
                # is found by the timer's read, within IDLE_POLL, as after any first claim).
                handed = hub.take_handed(event)
                if handed:
                    return _claimed(handed, lease, outcomes, where)
                notified = hub.take_wake(event)
                now = time.time()
                if first or notified or (not claimed_nothing and await anyio.to_thread.run_sync(
                        ra.has_work, queues, now, lease)):
                    rows = await anyio.to_thread.run_sync(ra.claim, queues, claimer, now, lease, limit,
                                                          hub.polls_due(claimer, now))
                    first = False
                    if rows:
                        return _claimed(rows, lease, outcomes, where)
                claimed_nothing = False
                left = end - time.monotonic()
                if left <= 0:
                    return _claimed(hub.close_claimer(event), lease, outcomes, where)
                await hub.wait_for_work(event, min(IDLE_POLL, left))
        finally:
            left_over = hub.drop_claimer(event)
            if left_over:  # handed while the claim ended otherwise (client gone): back to the queue
                _keep(asyncio.ensure_future(anyio.to_thread.run_sync(_give_back, ra, hub, left_over, claimer)))


def _give_back(ra: RaQueue, hub: RAHub, rows: list[RaRequest], claimer: str) -> None:
    for row in rows:
        if ra.unclaim(row.id, row.queue, claimer):
            hub.submitted(row.queue)


_GIVING_BACK: set[asyncio.Future[None]] = set()


def _keep(task: asyncio.Future[None]) -> None:
    """Hold a reference to a background task until it ends (the loop keeps only weak ones)."""
    _GIVING_BACK.add(task)
    task.add_done_callback(_GIVING_BACK.discard)


def _claimed(rows: list[RaRequest], lease: float, outcomes: list[dict[str, Any]], where: dict[str, Any]
             ) -> JSONResponse:
    return JSONResponse({"requests": [_offer(r) for r in rows], "leaseSeconds": lease, "answers": outcomes, **where})


def _answer_then_claim(ra: RaQueue, hub: RAHub, answers: list[tuple[str, dict[str, Any]]], claimer: str,
                       queues: list[str] | None, lease: float, limit: int, polls: int | None
                       ) -> tuple[list[dict[str, Any]], list[RaRequest]]:
    """In a worker thread: record each answer as the result operation does (its waiter woken at
    once), then claim, recording ``polls`` polls (None: no claim). The outcomes say what became
    of each answer."""
    outcomes: list[dict[str, Any]] = []
    for rid, result_body in answers:
        try:
            _record_result(ra, hub, rid, result_body, claimer)
        except SignpeerError as exc:
            outcomes.append({"id": rid, "status": exc.status, "error": exc.message})
            continue
        outcomes.append({"id": rid, "state": "answered"})
    if polls is None:
        return outcomes, []
    return outcomes, ra.claim(queues, claimer, time.time(), lease, limit, polls)


def _offer(row: Any) -> dict[str, Any]:
    data = json.loads(row.request)
    data.update({"id": row.id, "queue": row.queue, "claims": row.claims, "deadline": row.deadline})
    return data


async def result(request: Request, services: Services) -> Response:
    """The CA's answer to one request: the chain, or its refusal."""
    rid = check_encodable(request.path_params["request_id"], "the RA request id")
    body = await json_body(request, empty={})
    ra = RaQueue(services.store.database)
    answerer = _peer(request)
    # One trip to a thread for the read, the checks and the write: each trip costs more than
    # the statements on SQLite, and this is on every one-time signature's path.
    hub = hub_for(services)
    await anyio.to_thread.run_sync(_record_result, ra, hub, rid, body, answerer)
    return JSONResponse({"id": rid, "state": "answered"})


def _record_result(ra: RaQueue, hub: RAHub, rid: str, body: dict[str, Any], answerer: str) -> RaRequest:
    """Check and record one answer (its waiter in this process woken with it); the answered row."""
    # A request this process queued and still waits for: its public key is known, no read.
    wanted = hub.public_key_of(rid)
    row: RaRequest | None = None
    if wanted is None:
        row = ra.request(rid)
        if row is None:
            raise NotFoundError(f"no RA request '{rid}'")
    chain_pem: str | None = None
    error: str | None = None
    certs: list[Any] | None = None
    if body.get("error"):
        error = check_encodable(str(body["error"])[:2000], "'error'")
    else:
        raw = body.get("chain")
        if isinstance(raw, list):
            raw = "\n".join(str(c) for c in raw)
        if not isinstance(raw, str) or not raw.strip():
            raise BadRequestError("give the issued chain ({\"chain\": [PEM, ...]}, leaf first) or the CA's "
                                  "refusal ({\"error\": \"reason\"})")
        certs = load_certificates(raw.encode())
        if wanted is None:
            assert row is not None  # read above
            wanted = base64.b64decode(json.loads(row.request)["publicKey"])
        if public_key_der(certs[0]) != wanted:
            raise BadRequestError(f"the first certificate is not for the public key of request {rid}; "
                                  "put the certificate issued for its CSR first")
        chain_pem = chain_to_pem(certs)
    # A request waiting in this process resumes with the row and the parsed chain: no read, no parse.
    accepted, now_row = ra.answer(rid, answerer, time.time(), chain_pem, error,
                                  lambda answered: hub.answered(rid, answered, certs))
    if now_row is None:  # purged meanwhile (long past its deadline)
        raise NotFoundError(f"no RA request '{rid}'")
    if not accepted:
        state = now_row.effective_state(time.time())
        if state == "answered":
            raise ConflictError(f"RA request {rid} was already answered by '{now_row.answered_by}'; this answer "
                                "was discarded")
        raise ConflictError(f"RA request {rid} has expired (its signing request no longer waits); this answer "
                            "was discarded")
    return now_row


def peer_routes(services: Services) -> list[Route]:
    """The RA operations, for the peer connector's ``signpeer_peer_routes`` hook."""

    async def ra_claim(request: Request) -> Response:
        """Long poll for queued RA requests of one-time keys."""
        return await claim(request, services)

    async def ra_result(request: Request) -> Response:
        """The CA's answer to one RA request: the chain, or its refusal."""
        return await result(request, services)

    return [Route(CLAIM_PATH, ra_claim, methods=["POST"], name="ra_claim"),
            Route(RESULT_PATH, ra_result, methods=["POST"], name="ra_result")]

"""The RA queue's tables: certificate requests queued for a CA peer, and the CA peers that poll.

Owned by this plugin (owner ``onetimecrypto``, revisions in ``migrations/``). In the database so
that every server process of every node sees every request and answer: nothing depends on one
process. Written through the core's public database object (``services.store.database``).

Every write notifies the processes sharing the database (:meth:`Database.notify`, once the write
has committed): a queued request on :data:`SUBMITTED` (payload: the queue), an answer or a
withdrawal on :data:`ANSWERED` (payload: the request id). Long-polling CA peers and waiting
signing requests are woken by them, on whichever node they are, instead of re-reading rows.
Two writes need no notification: a request handed to a claim waiting in the same process
(:meth:`RaQueue.submit_claimed`), and an answer handed to its waiting request in the process
that records it (only the process that queued a request waits for its answer).

Each write is one statement (:meth:`Database.write`: on PostgreSQL a single round trip in
autocommit, no ``BEGIN``/``COMMIT``), and its notification a second one sent after it: the
queue's hops are on every one-time signature's path. A process that dies between the two leaves
a notification unsent; the waiters' slow re-check (a second) finds the row anyway.

Claims take the oldest claimable rows; on PostgreSQL the rows are picked ``FOR UPDATE SKIP
LOCKED``, so CA peers polling different nodes at once never block on, or get, the same request
(SQLite has one writer at a time anyway).

States: ``pending`` (queued), ``claimed`` (offered to a CA peer; offered again once its lease has
passed), ``answered`` (chain or refusal recorded), ``expired`` (withdrawn, or past its deadline
unanswered — see :meth:`RaRequest.effective_state`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from signpeer_core.api import Database, MigrationSource
from signpeer_onetimecrypto.metrics import ra_answer_wait, ra_claim_wait

metadata = MetaData()

ra_requests = Table(
    "ra_requests", metadata,
    Column("id", Text, primary_key=True),
    Column("queue", Text, nullable=False),
    Column("worker_id", Integer, nullable=False),
    Column("worker", Text, nullable=False),
    Column("request", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("created", Float, nullable=False),
    Column("deadline", Float, nullable=False),
    Column("claimed_at", Float),
    Column("claimed_by", Text),
    Column("claims", Integer, nullable=False, server_default="0"),
    Column("answered_at", Float),
    Column("answered_by", Text),
    Column("chain", Text),
    Column("error", Text),
    Index("ra_requests_open", "state", "queue", "created"),
)

ra_pollers = Table(
    "ra_pollers", metadata,
    Column("identity", Text, primary_key=True),
    Column("queues", Text, nullable=False),
    Column("first_poll", Float, nullable=False),
    Column("last_poll", Float, nullable=False),
    Column("polls", Integer, nullable=False),
)


def migration_source() -> MigrationSource:
    """This plugin's tables for the ``signpeer_migrations`` hook (adopts schema version 3 of old databases)."""
    return MigrationSource(owner="onetimecrypto", location=Path(__file__).with_name("migrations"),
                           metadata=metadata, legacy_revisions={3: "onetimecrypto_0001"})


@dataclass
class RaRequest:
    """One queued RA certificate request (one-time keys, RA mode)."""

    id: str
    queue: str
    worker_id: int
    worker: str
    request: str  # JSON: the CSR, filled templates, profiles, validity (see signpeer_onetimecrypto)
    state: str  # pending, claimed, answered, expired
    created: float
    deadline: float
    claimed_at: float | None
    claimed_by: str | None
    claims: int
    answered_at: float | None
    answered_by: str | None
    chain: str | None  # PEM, leaf first, when the CA issued
    error: str | None  # the CA's refusal, or why the request was withdrawn

    def effective_state(self, now: float) -> str:
        """``expired`` for an open request past its deadline (nobody waits for it any more)."""
        if self.state in ("pending", "claimed") and now >= self.deadline:
            return "expired"
        return self.state


@dataclass
class RaPoller:
    """A CA peer that collects RA requests: who, which queues, when it last asked."""

    identity: str
    queues: str
    first_poll: float
    last_poll: float
    polls: int


_r = ra_requests
_p = ra_pollers
_COLUMNS = (_r.c.id, _r.c.queue, _r.c.worker_id, _r.c.worker, _r.c.request, _r.c.state, _r.c.created, _r.c.deadline,
            _r.c.claimed_at, _r.c.claimed_by, _r.c.claims, _r.c.answered_at, _r.c.answered_by, _r.c.chain, _r.c.error)
_KEYS = tuple(str(c.key) for c in _COLUMNS)
_OPEN = ("pending", "claimed")
#: The columns a request is queued with (the others: NULL, or claims' default 0).
_QUEUED = ("id", "queue", "worker_id", "worker", "request", "created", "deadline")
# Each one-time signature makes one of the two inserts and the answer: run prepared
# (RaQueue.__init__), so every bind is named and no IN list expands.
_SUBMIT = insert(_r).values({**{c: bindparam(c) for c in _QUEUED}, "state": "pending"})
_SUBMIT_CLAIMED = insert(_r).values({**{c: bindparam(c) for c in _QUEUED}, "claimed_at": bindparam("claimed_at"),
                                     "claimed_by": bindparam("claimed_by"), "state": "claimed", "claims": 1})
_UNCLAIM = (update(_r).where(_r.c.id == bindparam("rid"), _r.c.state == "claimed", _r.c.claimed_by == bindparam("claimer"))
            .values(state="pending", claimed_at=None, claimed_by=None, claims=_r.c.claims - 1))
_ONE = select(*_COLUMNS).where(_r.c.id == bindparam("id"))
_ANSWER = (update(_r).where(_r.c.id == bindparam("rid"), or_(*(_r.c.state == s for s in _OPEN)),
                            _r.c.deadline > bindparam("now"))
           .values(state="answered", answered_at=bindparam("now"), answered_by=bindparam("answerer"),
                   chain=bindparam("pem_chain"), error=bindparam("refusal"))
           .returning(*_COLUMNS))
_WITHDRAW = (update(_r).where(_r.c.id == bindparam("rid"), _r.c.state.in_(_OPEN))
             .values(state="expired", answered_at=bindparam("now"), error=bindparam("reason")))
_POLLERS = select(_p.c.identity, _p.c.queues, _p.c.first_poll, _p.c.last_poll, _p.c.polls).order_by(
    _p.c.last_poll.desc())
_PURGE = delete(_r).where(_r.c.created < bindparam("before"),
                          or_(_r.c.state.in_(("answered", "expired")), _r.c.deadline < bindparam("before")))


def _claimable(some_queues: bool) -> ColumnElement[bool]:
    """Pending requests, and claimed ones whose lease has passed, before their deadline; parameters
    ``now``, ``lease_start`` (now - lease) and, for ``some_queues``, ``queues``."""
    cond = and_(or_(_r.c.state == "pending",
                    and_(_r.c.state == "claimed", _r.c.claimed_at <= bindparam("lease_start", type_=Float))),
                _r.c.deadline > bindparam("now", type_=Float))
    return and_(cond, _r.c.queue.in_(bindparam("queues", expanding=True))) if some_queues else cond


# Built once: idle long polls check for work every 50 ms, and building a statement costs more
# than running it.
_HAS_WORK = {some: select(_r.c.id).where(_claimable(some)).limit(1) for some in (False, True)}
_CLAIM = {some: (update(_r).where(_r.c.id.in_(
              select(_r.c.id).where(_claimable(some)).order_by(_r.c.created).limit(bindparam("limit"))
              .with_for_update(skip_locked=True)))  # PostgreSQL; SQLite renders no FOR UPDATE
          .values(state="claimed", claimed_at=bindparam("now"), claimed_by=bindparam("claimer"),
                  claims=_r.c.claims + 1)
          .returning(*_COLUMNS)) for some in (False, True)}


#: Notification channels (see the module docstring).
SUBMITTED = "ra.submitted"
ANSWERED = "ra.answered"
#: Between the queue and the submitting process's tag in a :data:`SUBMITTED` payload.
ORIGIN_SEPARATOR = "\x1e"


def _claim_parameters(queues: list[str] | None, now: float, lease: float) -> dict[str, Any]:
    params: dict[str, Any] = {"now": now, "lease_start": now - lease}
    if queues:
        params["queues"] = list(queues)
    return params


class RaQueue:
    """The queue's operations; ``queues`` None (or empty) means every queue."""

    def __init__(self, database: Database) -> None:
        self.database = database
        # Built once per database: the routes make a RaQueue per request, and compiling these
        # on each was a third of the claim route's time.
        self._poll = database.memo("onetimecrypto.ra_poll", lambda: database.upsert(_p, ["identity"], lambda new: {
            "queues": new.queues, "last_poll": new.last_poll, "polls": _p.c.polls + new.polls}))
        # the idle poll of a CA serving every queue
        self._has_work_any = database.memo("onetimecrypto.has_work_any", lambda: database.prepare(_HAS_WORK[False]))
        self._submit = database.memo("onetimecrypto.submit", lambda: database.prepare_write(_SUBMIT))
        self._submit_claimed = database.memo("onetimecrypto.submit_claimed",
                                             lambda: database.prepare_write(_SUBMIT_CLAIMED))
        self._answer = database.memo("onetimecrypto.answer", lambda: database.prepare_write(_ANSWER))
        # A claim for every queue (no IN list to expand) and the read of one request, as prepared.
        self._claim_any = database.memo("onetimecrypto.claim_any", lambda: database.prepare_write(_CLAIM[False]))
        self._one = database.memo("onetimecrypto.one", lambda: database.prepare(_ONE))

    def submit(self, request_id: str, queue: str, worker_id: int, worker: str, request: str,
               created: float, deadline: float, origin: str = "") -> None:
        """Queue a request as ``pending``. ``origin`` tags the notification (payload
        ``queue<ORIGIN_SEPARATOR>origin``), so that the submitting process, which woke its own
        claimers already, can skip it."""
        # The insert and its notification: one round trip on PostgreSQL (PreparedWrite.run).
        self._submit.run({"id": request_id, "queue": queue, "worker_id": worker_id, "worker": worker,
                          "request": request, "created": created, "deadline": deadline},
                         notify=(SUBMITTED, f"{queue}{ORIGIN_SEPARATOR}{origin}" if origin else queue))

    def submit_claimed(self, request_id: str, queue: str, worker_id: int, worker: str, request: str,
                       created: float, deadline: float, claimer: str, lease_start: float,
                       polls: int = 0, queues: list[str] | None = None) -> RaRequest:
        """Queue a request already claimed by ``claimer`` (a claim of this process waits for it:
        handed over directly, see :meth:`PeersRAConnector.submit`), in one statement; no
        notification (no other claimer could take it before its lease runs out). ``polls`` > 0
        records that many polls of ``claimer`` (on ``queues``) in the same transaction, as a
        claim does. Returns the row as written."""
        row = RaRequest(id=request_id, queue=queue, worker_id=worker_id, worker=worker, request=request,
                        state="claimed", created=created, deadline=deadline, claimed_at=lease_start,
                        claimed_by=claimer, claims=1, answered_at=None, answered_by=None, chain=None, error=None)
        values = {"id": request_id, "queue": queue, "worker_id": worker_id, "worker": worker, "request": request,
                  "created": created, "deadline": deadline, "claimed_at": lease_start, "claimed_by": claimer}
        if polls:
            self.database.write_each([
                (_SUBMIT_CLAIMED, values),
                (self._poll, {"identity": claimer, "queues": ",".join(queues or []) or "*", "first_poll": created,
                              "last_poll": created, "polls": polls})])
        else:
            self._submit_claimed.run(values)
        ra_claim_wait.observe(0.0)
        return row

    def unclaim(self, request_id: str, queue: str, claimer: str) -> bool:
        """Give a request handed to a claim that stopped waiting back to the queue (``pending``,
        its claim not counted), and notify it as queued (to every process, this one included)."""
        released = self.database.write(_UNCLAIM, {"rid": request_id, "claimer": claimer}).rowcount > 0
        if released:
            self.database.notify(SUBMITTED, queue)
        return released

    def has_work(self, queues: list[str] | None, now: float, lease: float) -> bool:
        """True when :meth:`claim` would find something (a read: cheap for idle long polls)."""
        params = _claim_parameters(queues, now, lease)
        if not queues:
            return bool(self._has_work_any.all(params))
        with self.database.read() as conn:
            return conn.execute(_HAS_WORK[True], params).first() is not None

    def claim(self, queues: list[str] | None, claimer: str, now: float, lease: float, limit: int,
              polls: int = 1) -> list[RaRequest]:
        """Claim up to ``limit`` requests in one transaction, oldest first: pending ones, and claimed
        ones whose claim is older than ``lease`` seconds (offered again), all before their deadline.
        Records ``polls`` polls of ``claimer`` in the same transaction (0: none, one statement less;
        the claim route records them at most once a second, see :meth:`RAHub.polls_due`)."""
        params = {**_claim_parameters(queues, now, lease), "claimer": claimer, "limit": limit}
        if polls:
            claimed_rows, _ = self.database.write_each([
                (_CLAIM[bool(queues)], params),
                (self._poll, {"identity": claimer, "queues": ",".join(queues or []) or "*", "first_poll": now,
                              "last_poll": now, "polls": polls})])
        elif not queues:
            found, _ = self._claim_any.run(params)
            return self._claimed([RaRequest(**dict(zip(self._claim_any.keys, row, strict=True))) for row in found], now)
        else:
            claimed_rows = self.database.write(_CLAIM[True], params)
        return self._claimed([RaRequest(**r._mapping) for r in claimed_rows.rows], now)

    @staticmethod
    def _claimed(rows: list[RaRequest], now: float) -> list[RaRequest]:
        claimed = sorted(rows, key=lambda r: r.created)
        for r in claimed:
            ra_claim_wait.observe(max(0.0, now - r.created))
        return claimed

    def answer(self, request_id: str, answerer: str, now: float, chain: str | None,
               error: str | None, accepted_first: Callable[[RaRequest], bool] | None = None
               ) -> tuple[bool, RaRequest | None]:
        """Record the CA's answer unless the request is already answered or past its deadline.
        ``accepted_first`` gets the answered row before the notification goes out (so that a
        waiter of this process gets the row with its wake-up, not the notification's bare one);
        when it returns True (it handed the row to the request's waiter, which lives in the
        process that queued the request: nobody else waits for it), no notification is sent.

        Returns (accepted, the request as it is now; None when unknown).
        """
        rows, _ = self._answer.run({"rid": request_id, "now": now, "answerer": answerer, "pem_chain": chain,
                                    "refusal": error})
        accepted = bool(rows)
        if accepted:
            answered: RaRequest | None = RaRequest(**dict(zip(self._answer.keys, rows[0], strict=True)))
            if accepted_first is None or answered is None or not accepted_first(answered):
                self.database.notify(ANSWERED, request_id)
        else:
            answered = self.request(request_id)  # why not: already answered, expired, unknown
        if accepted and answered is not None and answered.claimed_at is not None:
            ra_answer_wait.observe(max(0.0, now - answered.claimed_at))
        return accepted, answered

    def withdraw(self, request_id: str, now: float, reason: str) -> bool:
        """Mark an unanswered request ``expired`` (its signing request stopped waiting)."""
        withdrawn = self.database.write(_WITHDRAW, {"rid": request_id, "now": now, "reason": reason}).rowcount > 0
        if withdrawn:
            self.database.notify(ANSWERED, request_id)
        return withdrawn

    def request(self, request_id: str) -> RaRequest | None:
        rows = self._one.all({"id": request_id})
        return RaRequest(**dict(zip(_KEYS, rows[0], strict=True))) if rows else None

    def requests(self, states: list[str] | None = None, now: float | None = None,
                 limit: int = 1000) -> list[RaRequest]:
        """Requests, newest first; ``states`` filters on :meth:`RaRequest.effective_state`."""
        now = time.time() if now is None else now
        query: Any = select(*_COLUMNS).order_by(_r.c.created.desc())
        if not states:
            query = query.limit(limit)
        with self.database.read() as conn:
            out = [RaRequest(**r._mapping) for r in conn.execute(query).all()]
        if states:
            wanted = {s.lower() for s in states}
            out = [r for r in out if r.effective_state(now) in wanted][:limit]
        return out

    def depth(self, now: float) -> tuple[dict[str, int], float | None]:
        """Requests per effective state, and the creation time of the oldest open one (for ``/metrics``)."""
        late = (_r.c.state.in_(_OPEN) & (_r.c.deadline <= now)).label("late")
        query = select(_r.c.state, late, func.count(), func.min(_r.c.created)).group_by(_r.c.state, late)
        counts: dict[str, int] = {}
        oldest: float | None = None
        with self.database.read() as conn:
            for state, is_late, count, created in conn.execute(query).all():
                effective = "expired" if is_late else state
                counts[effective] = counts.get(effective, 0) + int(count)
                if state in _OPEN and not is_late and (oldest is None or created < oldest):
                    oldest = float(created)
        return counts, oldest

    def pollers(self) -> list[RaPoller]:
        """CA peers that have polled, most recent first."""
        with self.database.read() as conn:
            return [RaPoller(**r._mapping) for r in conn.execute(_POLLERS).all()]

    def purge(self, before: float, audit: Callable[[Connection, int], None] | None = None) -> int:
        """Delete answered and expired requests created before ``before``; the number deleted.
        ``audit`` writes its record (given the number) in the same transaction."""
        with self.database.transaction() as conn:
            removed: int = conn.execute(_PURGE, {"before": before}).rowcount
            if audit is not None:
                audit(conn, removed)
            return removed

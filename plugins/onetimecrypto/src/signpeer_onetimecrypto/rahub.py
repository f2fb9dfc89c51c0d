"""The RA hub of one server process: wake-ups for waiting signing requests and long-polling claims.

:class:`RAHub` turns the RA queue's notifications (:mod:`.raqueue`; from this process and, through
the database, from every other one) into wake-ups: an answer wakes its waiting signing request, a
queued request wakes a long-polling CA connection. It also hands a request queued in this process
to a claim waiting in it (:meth:`RAHub.reserve`, :meth:`RAHub.hand`), counts each CA peer's long
polls (:meth:`RAHub.poll_slot`) and paces the recording of polls (:meth:`RAHub.polls_due`).
Moved out of :mod:`.ra` (which keeps the connector) unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import anyio
from cryptography import x509

from signpeer_core.api import TooManyRequestsError
from signpeer_onetimecrypto.raqueue import ANSWERED, ORIGIN_SEPARATOR, SUBMITTED, RaRequest

if TYPE_CHECKING:
    from signpeer_core.api import Database, Services


#: Claims and hand-offs to a waiting claim record the CA peer's polls (``ra_pollers``) at most
#: this often (seconds) per CA peer and process, with the count since: one statement less per
#: claim (a round trip on PostgreSQL). A CA peer's first poll is recorded at once.
POLL_RECORD_INTERVAL = 1.0

#: Long polls one CA peer may hold open at once on one server process; more are refused (429).
MAX_POLLS_PER_PEER = 32


class _Waker:
    """An asyncio event that any thread may set (notifications arrive in a listener thread); a
    claimer's also says which queues it serves (None: every queue)."""

    def __init__(self, queues: list[str] | None = None, claimer: str | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self.queues = frozenset(queues) if queues else None
        #: A waiting request's answer, when this process recorded it (no read needed), and its
        #: chain as the result operation parsed it (no parse needed).
        self.answer: RaRequest | None = None
        self.certificates: list[x509.Certificate] | None = None
        #: A waiting request's public key (DER), known when this process queued it: the result
        #: operation checks the chain against it without reading the row.
        self.public_key: bytes | None = None
        #: A claimer's CA peer (its certificate's DN): requests queued in this process are handed
        #: to it directly, already claimed in its name (see :meth:`RAHub.reserve`).
        self.claimer = claimer
        self.claimed_queues = list(queues) if queues else None
        #: Requests handed to this claimer, not yet taken; hand-offs reserved and not yet made.
        self.handed: list[RaRequest] = []
        self.reserved = 0
        #: The claimer stopped waiting: a reserved hand-off must give its request back to the queue.
        self.closed = False
        #: A claimer waiting in :meth:`RAHub.wait_for_work` (so a queued request may pick it).
        self.armed = False
        #: Woken, and not yet taken by :meth:`RAHub.take_wake` (the event is set, or about to be).
        self.woken = False

    def serves(self, queue: str | None) -> bool:
        return queue is None or self.queues is None or queue in self.queues

    def wake(self) -> None:
        self.woken = True
        self.loop.call_soon_threadsafe(self.event.set)


class RAHub:
    """Wake-ups of one process: answers for waiting requests, new work for long-polling claimers,
    from this process and (through the database's notifications) from every other one."""

    def __init__(self, database: Database | None = None) -> None:
        self._lock = threading.Lock()
        self._answers: dict[str, _Waker] = {}
        self._claimers: list[_Waker] = []  # oldest first: the one woken next goes to the end
        self._polls: dict[str, int] = {}
        self._unrecorded: dict[str, int] = {}  # hand-offs per CA peer not yet recorded as polls
        self._recorded_at: dict[str, float] = {}
        #: Tags this process's submissions: their notification comes back here too, and the
        #: claimers here were woken at once (:meth:`submitted`), not by it.
        self.origin = uuid.uuid4().hex[:12]
        self._database = database
        self._ready = database is None
        if database is not None:
            database.listen(SUBMITTED, self._on_submitted)
            database.listen(ANSWERED, self._on_answered)

    @property
    def is_ready(self) -> bool:
        """Whether the notifications are heard already (then :meth:`ready` need not be waited for)."""
        return self._ready

    def ready(self) -> None:
        """Block until the notifications are heard (once per process: a thread's work)."""
        if not self._ready and self._database is not None:
            self._ready = self._database.listener_ready(5.0)

    def answer_event(self, request_id: str) -> asyncio.Event:
        with self._lock:
            waker = self._answers.get(request_id)
            if waker is None:
                waker = self._answers[request_id] = _Waker()
        return waker.event

    def answer_of(self, request_id: str) -> RaRequest | None:
        """The answered row :meth:`answered` handed over in this process, if it did."""
        with self._lock:
            waker = self._answers.get(request_id)
        return waker.answer if waker is not None else None

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._answers.pop(request_id, None)

    def answered(self, request_id: str, row: RaRequest | None = None,
                 certificates: list[x509.Certificate] | None = None) -> bool:
        """Wake the request's waiter; ``row``, the answered row, spares it reading it again, and
        ``certificates`` (the row's chain, parsed) parsing it again. True when the waiter is in
        this process and got ``row``: then no other process needs to hear of the answer (only
        the process that queued a request waits for it)."""
        handed = False
        with self._lock:
            waker = self._answers.get(request_id)
            if waker is not None and row is not None and row.state == "answered":
                waker.answer = row
                waker.certificates = certificates if row.chain else None
                handed = True
        if waker is not None:
            waker.wake()
        return handed

    def certificates_of(self, request_id: str) -> list[x509.Certificate] | None:
        """The answered chain :meth:`answered` handed over parsed, if it did."""
        with self._lock:
            waker = self._answers.get(request_id)
        return waker.certificates if waker is not None else None

    def expect_key(self, request_id: str, public_key_der: bytes) -> None:
        """Remember the public key of a request this process queued (see :meth:`public_key_of`)."""
        with self._lock:
            waker = self._answers.get(request_id)
            if waker is not None:
                waker.public_key = public_key_der

    def public_key_of(self, request_id: str) -> bytes | None:
        """The public key of a request queued by this process and still waited for, else None."""
        with self._lock:
            waker = self._answers.get(request_id)
        return waker.public_key if waker is not None else None

    def claimer_event(self, queues: list[str] | None = None, claimer: str | None = None) -> asyncio.Event:
        """The event set when a request is queued on one of ``queues`` (None: any queue): a set
        event means "claim now", with no read first. With ``claimer`` (the CA peer's identity),
        requests queued in this process may be handed to it directly (:meth:`take_handed`)."""
        waker = _Waker(queues, claimer)
        with self._lock:
            self._claimers.append(waker)
        return waker.event

    def drop_claimer(self, event: asyncio.Event) -> list[RaRequest]:
        """The claimer stops waiting; the requests handed to it and not taken (claimed in its
        name: give them back, :meth:`RaQueue.unclaim`). A hand-off still under way gives its
        request back itself."""
        with self._lock:
            waker = next((w for w in self._claimers if w.event is event), None)
            self._claimers = [w for w in self._claimers if w.event is not event]
            if waker is None:
                return []
            waker.closed = True
            left, waker.handed = waker.handed, []
        return left

    # -- direct hand-off: a request queued in this process, to a claimer waiting in it ----------
    def polls_due(self, claimer: str, now: float) -> int:
        """A claim or a hand-off (a poll each) records the CA peer's polls (``ra_pollers``) at most
        every :data:`POLL_RECORD_INTERVAL` seconds per CA peer: the number to record now (0: not yet)."""
        with self._lock:
            count = self._unrecorded.get(claimer, 0) + 1
            if now - self._recorded_at.get(claimer, 0.0) < POLL_RECORD_INTERVAL:
                self._unrecorded[claimer] = count
                return 0
            self._unrecorded[claimer] = 0
            self._recorded_at[claimer] = now
            return count

    def reserve(self, queue: str) -> _Waker | None:
        """Pick a claimer of ``queue`` waiting in :meth:`wait_for_work` for the request about to
        be queued (then written already claimed in its name: no claim statement, no trip, and no
        other claimer wakes for it); None when none waits (queue it as pending)."""
        with self._lock:
            waker = next((w for w in self._claimers
                          if w.claimer is not None and w.armed and not w.woken and not w.closed
                          and w.serves(queue)), None)
            if waker is None:
                return None
            waker.armed = False  # picked: the next request picks another
            waker.reserved += 1
            self._claimers.remove(waker)
            self._claimers.append(waker)
            return waker

    def hand(self, waker: _Waker, row: RaRequest | None) -> bool:
        """Hand the request written claimed for ``waker`` (None: the write failed, it only
        looks again). False when the claimer stopped waiting meanwhile: give the request back."""
        with self._lock:
            waker.reserved -= 1
            if waker.closed and row is not None:
                return False
            if row is not None:
                waker.handed.append(row)
            waker.woken = True
        waker.wake()
        return True

    def take_handed(self, event: asyncio.Event) -> list[RaRequest]:
        """The requests handed to this claimer since it last asked (already claimed in its name)."""
        with self._lock:
            waker = next((w for w in self._claimers if w.event is event), None)
            if waker is None or not waker.handed:
                return []
            rows, waker.handed = waker.handed, []
        return rows

    def close_claimer(self, event: asyncio.Event) -> list[RaRequest]:
        """The claimer's wait is over: no more hand-offs; what was handed to it meanwhile."""
        with self._lock:
            waker = next((w for w in self._claimers if w.event is event), None)
            if waker is None:
                return []
            waker.closed = True
            rows, waker.handed = waker.handed, []
        return rows

    def another_waits(self, event: asyncio.Event, queues: list[str] | None) -> bool:
        """Whether another claimer of this process waits in :meth:`wait_for_work` for every one of
        ``queues`` (None: every queue), unpicked: then whatever is claimable now reaches a poll
        without the claimer of ``event`` looking. A request queued here or notified from another
        process wakes (or is handed to) a waiting claimer; one that was claimable before that
        claimer began to wait was found by its own first look; and a claim whose lease runs out
        (which nothing notifies) is found by the waiting claimer's timer within a second, as it
        is when every claimer waits."""
        wanted = frozenset(queues) if queues else None
        with self._lock:
            return any(w.event is not event and w.armed and not w.woken and not w.closed
                       and (w.queues is None or (wanted is not None and wanted <= w.queues))
                       for w in self._claimers)

    def take_wake(self, event: asyncio.Event) -> bool:
        """Whether a claimer was woken since it last asked (clearing its event): a woken claimer
        claims at once, without a read first."""
        with self._lock:
            waker = next((w for w in self._claimers if w.event is event), None)
            woken = event.is_set() or (waker is not None and waker.woken)
            if waker is not None:
                waker.woken = False
            event.clear()
        return woken

    async def wait_for_work(self, event: asyncio.Event, timeout: float) -> None:
        """Wait at most ``timeout`` seconds on a claimer's event; meanwhile a queued request may
        pick this claimer to wake (see :meth:`submitted`)."""
        with self._lock:
            waker = next((w for w in self._claimers if w.event is event), None)
            if waker is not None and not waker.woken:  # a woken one looks anyway: pick another
                waker.armed = True
        try:
            with anyio.move_on_after(timeout):
                await event.wait()
        finally:
            if waker is not None:
                with self._lock:
                    waker.armed = False

    def submitted(self, queue: str | None = None) -> None:
        """A request was queued on ``queue``: wake one of its claimers that waits (the one that
        waited longest; the next request wakes the next), not all of them to race for one row
        with a write each. When none of them waits (all busy claiming or answering), every one
        of them is told, so that none goes back to waiting without looking. None (after a
        reconnection: something may be missed) wakes every claimer."""
        with self._lock:
            wakers = [w for w in self._claimers if w.serves(queue)]
            waiting = [w for w in wakers if w.armed and not w.woken]
            if queue is not None and waiting:
                wakers = waiting[:1]
                wakers[0].armed = False  # picked: the next request picks another
                self._claimers.remove(wakers[0])
                self._claimers.append(wakers[0])
            for waker in wakers:
                waker.woken = True
        for waker in wakers:
            waker.wake()

    @contextlib.contextmanager
    def poll_slot(self, peer: str) -> Iterator[None]:
        """One of a CA peer's :data:`MAX_POLLS_PER_PEER` long polls on this process."""
        with self._lock:
            held = self._polls.get(peer, 0)
            if held >= MAX_POLLS_PER_PEER:
                raise TooManyRequestsError(
                    f"CA peer '{peer}' already holds {held} RA long polls on this server process (the limit is "
                    f"{MAX_POLLS_PER_PEER}); poll with fewer parallel connections")
            self._polls[peer] = held + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._polls.get(peer, 1) - 1
                if left > 0:
                    self._polls[peer] = left
                else:
                    self._polls.pop(peer, None)

    # -- notifications from the database (listener thread) -------------------------------------
    def _on_submitted(self, payload: str | None) -> None:
        if payload is None:
            self.submitted(None)
            return
        queue, _, origin = payload.partition(ORIGIN_SEPARATOR)
        if origin != self.origin:
            self.submitted(queue)

    def _on_answered(self, payload: str | None) -> None:
        if payload is not None:
            self.answered(payload)
            return
        with self._lock:  # reconnected: something may have been missed, every waiter looks again
            wakers = list(self._answers.values())
        for waker in wakers:
            waker.wake()


def hub_for(services: Services) -> RAHub:
    """The hub of one process (one per :class:`Services`, kept in its plugin state)."""
    return services.state(RAHub, lambda: RAHub(services.store.database))

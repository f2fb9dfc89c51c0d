"""RA mode: the peers RA connector queues certificate requests for a CA peer (spec §7.5).

``PeersRAConnector`` (SignServer's ``EjbcaPeersCAConnector``) writes each request — CSR, filled
templates, profile names, validity, deadline — to the ``ra_requests`` table and waits for the
answer. A CA peer collects requests with a long poll on the peer endpoint (:mod:`.routes`),
issues, and posts back the chain or its refusal.

Waiting does not depend on one process's memory: the queue's writes are notified to every
process sharing the database, on every node (:mod:`.raqueue`; PostgreSQL ``LISTEN/NOTIFY``,
loopback datagrams on SQLite), and :class:`RAHub` turns them into wake-ups: an answer wakes its
waiting signing request, a queued request wakes the long-polling CA connections, wherever they
came in. Each waiter also re-reads its row every :data:`POLL_INTERVAL` seconds, a safety net
for a notification lost while the database connection was being re-established. The queue is
named by ``CANAME`` (the CA that must answer); a CA peer may serve several queues.

A request whose signing request stops waiting (timeout, error, client gone) is marked
``expired`` so that a late answer is refused; a claimed request that gets no answer within its
lease is offered again until its deadline.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from cryptography import x509

from signpeer_core.api import (
    CAConnector,
    CARefusedError,
    CertificateRequest,
    ServiceUnavailableError,
    load_certificates,
    tracing_span,
)
from signpeer_onetimecrypto.rahub import hub_for
from signpeer_onetimecrypto.raqueue import RaQueue, RaRequest

if TYPE_CHECKING:
    from signpeer_core.api import Services

#: Seconds between two reads of a waiting request's row when no notification came (a safety net).
POLL_INTERVAL = 1.0
#: Seconds a claimed request stays with its claimer before it is offered again.
DEFAULT_LEASE = 10.0
#: A CA peer that polled within this many seconds counts as connected (for error messages).
CONNECTED_WITHIN = 60.0


def chain_to_pem(chain: list[x509.Certificate]) -> str:
    from signpeer_core.api import certificate_pem

    return certificate_pem(chain)


def peers_status(services: Services, queue: str, now: float | None = None) -> str:
    """Whether a CA peer is connected to ``queue``, in words (for 503 messages and the CLI)."""
    now = time.time() if now is None else now
    pollers = [p for p in RaQueue(services.store.database).pollers()
               if p.queues == "*" or queue in p.queues.split(",")]
    recent = [p for p in pollers if now - p.last_poll <= CONNECTED_WITHIN]
    if recent:
        who = ", ".join(f"'{p.identity}' (last poll {now - p.last_poll:.0f} s ago)" for p in recent[:3])
        return f"CA peer connected: {who}"
    if pollers:
        p = pollers[0]
        return (f"no CA peer is connected: the last poll was by '{p.identity}' {now - p.last_poll:.0f} s ago; "
                "check that its RA loop runs (signpeer ra serve <url>)")
    return ("no CA peer is connected: none has ever polled this queue; start the CA side's RA loop "
            "(signpeer ra serve <url>) and authorize its certificate (signpeer peers authorize)")


#: The RA queue of requests whose worker names no CA (no ``CANAME``).
DEFAULT_QUEUE = "default"


class PeersRAConnector(CAConnector):
    """Queues requests in the database for a CA peer (SignServer's EjbcaPeersCAConnector)."""

    type_name = "PeersRAConnector"
    implementation_aliases = ("org.signserver.module.onetime.caconnector.EjbcaPeersCAConnector",
                              "EjbcaPeersCAConnector")
    #: CANAME is not required: SignServer's own documented EjbcaPeers block leaves it out and the
    #: worker loads; the CA then picks the CA (EJBCA: the end entity profile's default CA).
    required = ("ENDENTITYPROFILE", "CERTIFICATEPROFILE", "USERNAME_PATTERN", "SUBJECTDN_PATTERN")

    @property
    def queue(self) -> str:
        """The RA queue: ``CANAME``, or :data:`DEFAULT_QUEUE` without one."""
        return self.config.get_str("CANAME") or DEFAULT_QUEUE

    def check_configuration(self) -> list[str]:
        problems = super().check_configuration()
        if not self.services.registry.has_hook("signpeer_peer_routes"):
            problems.append("PeersRAConnector needs the peer endpoint: install signpeer-peerconnector")
        return problems

    async def request_certificate(self, request: CertificateRequest) -> list[x509.Certificate]:
        with tracing_span("signpeer.ra.wait", {"signpeer.ra.queue": self.queue,
                                               "signpeer.ra.request_id": request.transaction_id}) as span:
            event = self.expect(request.transaction_id)
            try:
                await anyio.to_thread.run_sync(self.submit, request)
            except BaseException:
                # Nothing queued (or a queue write that failed: withdrawing it is harmless).
                await self.abandon(request.transaction_id, submitted=True)
                raise
            span.add_event("queued")
            return await self.wait(request, event, span)

    # The three steps of request_certificate, apart: the one-time worker queues the request in
    # the same trip to a thread as it makes the key and the CSR (see OneTimeCryptoToken.acquire).
    def expect(self, request_id: str) -> asyncio.Event:
        """Register the waiter of ``request_id`` (on the event loop, before :meth:`submit`: an
        answer may come at once); :meth:`wait` or :meth:`abandon` ends it."""
        return hub_for(self.services).answer_event(request_id)

    def submit(self, request: CertificateRequest) -> None:
        """Queue ``request`` (blocking: a database write; in a worker thread) and wake this
        process's claimers at once (the others' by the notification).

        When a CA peer's claim waits in this process, the request is written already claimed in
        its name and handed to that claim directly (one statement; no claim trip, no claim
        statement, no notification): the row is in the database either way, so a process that
        dies loses nothing (the claim's lease runs out and the request is offered again)."""
        hub = hub_for(self.services)
        if not hub.is_ready:
            hub.ready()  # listening before the answer can come
        hub.expect_key(request.transaction_id, request.public_key_der)
        ra = RaQueue(self.services.store.database)
        queue = self.queue
        args = (request.transaction_id, queue, self.worker.id, self.worker.name, request.dumps(), time.time(),
                request.deadline)
        waker = hub.reserve(queue)
        if waker is None:
            ra.submit(*args, hub.origin)
            hub.submitted(queue)
            return
        claimer = waker.claimer
        assert claimer is not None  # reserve picks claimers with an identity
        row: RaRequest | None = None
        try:
            row = ra.submit_claimed(*args, claimer=claimer, lease_start=args[5],
                                    polls=hub.polls_due(claimer, args[5]), queues=waker.claimed_queues)
        finally:
            handed = hub.hand(waker, row)
        if not handed:  # the claim stopped waiting meanwhile: offer the request to every claimer
            ra.unclaim(request.transaction_id, queue, claimer)
            hub.submitted(queue)

    async def abandon(self, request_id: str, submitted: bool) -> None:
        """The signing request stops before :meth:`wait`: forget its waiter and, when it was
        queued, withdraw it (so nobody issues for a key that is gone). Runs to its end even when
        the caller is cancelled."""
        hub_for(self.services).forget(request_id)
        if submitted:
            await asyncio.shield(asyncio.ensure_future(anyio.to_thread.run_sync(
                RaQueue(self.services.store.database).withdraw, request_id, time.time(),
                "the signing request stopped waiting")))

    async def wait(self, request: CertificateRequest, event: asyncio.Event, span: Any = None) -> list[x509.Certificate]:
        """Wait for the answer to the queued ``request`` (``event`` from :meth:`expect`); an
        unanswered request is withdrawn when the wait ends (error, timeout, client gone)."""
        ra = RaQueue(self.services.store.database)
        hub = hub_for(self.services)
        rid = request.transaction_id
        answered = False
        try:
            while True:
                with anyio.move_on_after(POLL_INTERVAL):
                    await event.wait()
                event.clear()
                row = hub.answer_of(rid)  # answered by this process: no read
                certificates = hub.certificates_of(rid) if row is not None else None
                if row is None:
                    row = await anyio.to_thread.run_sync(ra.request, rid)
                if row is not None and row.state == "answered":
                    answered = True
                    if span is not None:
                        span.set_attribute("signpeer.ra.claims", row.claims)
                        span.set_attribute("signpeer.ra.claimed_by", row.claimed_by or "")
                    if row.error or not row.chain:
                        raise CARefusedError(f"the CA refused the certificate request {rid} (RA queue "
                                             f"'{self.queue}'): {row.error or 'no certificate in the answer'}")
                    return certificates or load_certificates(row.chain.encode())
                if row is None or row.state == "expired":
                    raise ServiceUnavailableError(f"the RA request {rid} was withdrawn from queue '{self.queue}'")
        finally:
            hub.forget(rid)
            if not answered:
                # So a late answer is refused and nobody issues for a key that is gone.
                await asyncio.shield(asyncio.ensure_future(anyio.to_thread.run_sync(
                    ra.withdraw, rid, time.time(), "the signing request stopped waiting")))

    def timeout_message(self, request: CertificateRequest, waited: float) -> str:
        row = RaQueue(self.services.store.database).request(request.transaction_id)
        claimed = ""
        if row is not None and row.claims:
            claimed = f"; it was claimed {row.claims} time(s), last by '{row.claimed_by}', but not answered"
        elif row is not None:
            claimed = "; no CA peer claimed it"
        return (f"no certificate for request {request.transaction_id} from the RA queue '{self.queue}' within "
                f"{waited:g} s (CACONNECTOR_WAITTIMEOUT of worker '{self.worker.name}'){claimed}; "
                f"{peers_status(self.services, self.queue)}")

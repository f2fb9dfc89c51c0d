"""RA mode: the peers RA connector queues certificate requests for a CA peer (spec §7.5).

``PeersRAConnector`` (SignServer's ``EjbcaPeersCAConnector``) writes each request — CSR, filled
templates, profile names, validity, deadline — to the ``ra_requests`` table and waits for the
answer. A CA peer collects requests with a long poll on the peer endpoint (:mod:`.routes`),
issues, and posts back the chain or its refusal.

Waiting does not depend on one process's memory: the waiter re-reads its row every
:data:`POLL_INTERVAL` seconds, so an answer delivered through another server process is seen.
When the answer arrives through this process, :class:`RAHub` wakes the waiter at once, and a
new request wakes this process's long-polling CA connections at once. The queue is named by
``CANAME`` (the CA that must answer); a CA peer may serve several queues.

A request whose signing request stops waiting (timeout, error, client gone) is marked
``expired`` so that a late answer is refused; a claimed request that gets no answer within its
lease is offered again until its deadline.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
from cryptography import x509

from signpeer_core.api import (
    CAConnector,
    CARefusedError,
    CertificateRequest,
    ServiceUnavailableError,
    load_certificates,
)
from signpeer_onetimecrypto.raqueue import RaQueue

if TYPE_CHECKING:
    from signpeer_core.api import Services

#: Seconds between two reads of a waiting request's row (answers that came via another process),
#: starting at FIRST_POLL_INTERVAL and doubling up to POLL_INTERVAL.
POLL_INTERVAL = 0.05
FIRST_POLL_INTERVAL = 0.005
#: Seconds a claimed request stays with its claimer before it is offered again.
DEFAULT_LEASE = 10.0
#: A CA peer that polled within this many seconds counts as connected (for error messages).
CONNECTED_WITHIN = 60.0


class RAHub:
    """In-process wake-ups: answers for waiting requests, new work for long-polling claimers."""

    def __init__(self) -> None:
        self._answers: dict[str, asyncio.Event] = {}
        self._claimers: set[asyncio.Event] = set()

    def answer_event(self, request_id: str) -> asyncio.Event:
        event = self._answers.get(request_id)
        if event is None:
            event = self._answers[request_id] = asyncio.Event()
        return event

    def forget(self, request_id: str) -> None:
        self._answers.pop(request_id, None)

    def answered(self, request_id: str) -> None:
        event = self._answers.get(request_id)
        if event is not None:
            event.set()

    def claimer_event(self) -> asyncio.Event:
        event = asyncio.Event()
        self._claimers.add(event)
        return event

    def drop_claimer(self, event: asyncio.Event) -> None:
        self._claimers.discard(event)

    def submitted(self) -> None:
        for event in list(self._claimers):
            event.set()


def hub_for(services: Services) -> RAHub:
    """The hub of one process (one per :class:`Services`, kept in its plugin state)."""
    return services.state(RAHub)


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
        ra = RaQueue(self.services.store.database)
        hub = hub_for(self.services)
        rid = request.transaction_id
        event = hub.answer_event(rid)
        answered = False
        try:
            await anyio.to_thread.run_sync(ra.submit, rid, self.queue, self.worker.id, self.worker.name,
                                           request.dumps(), time.time(), request.deadline)
            hub.submitted()
            interval = FIRST_POLL_INTERVAL
            while True:
                with anyio.move_on_after(interval):
                    await event.wait()
                # Answers through other processes are only seen by reading: quickly at first
                # (a CA usually answers within milliseconds), then every POLL_INTERVAL.
                interval = min(POLL_INTERVAL, interval * 2)
                row = await anyio.to_thread.run_sync(ra.request, rid)
                if row is not None and row.state == "answered":
                    answered = True
                    if row.error or not row.chain:
                        raise CARefusedError(f"the CA refused the certificate request {rid} (RA queue "
                                             f"'{self.queue}'): {row.error or 'no certificate in the answer'}")
                    return load_certificates(row.chain.encode())
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

"""The CA side of RA mode: collect queued requests over the peer endpoint, issue, answer.

What EJBCA's peer connector does with "Process incoming requests" (spec §7.5): keep
``min_parallel`` long polls waiting while the RA is idle, add pollers up to ``max_parallel``
while every poller is busy, and drop the extra ones when a poll comes back empty. Each request
is checked before issuing — the CSR's signature, that its public key is the one the request
states, and that its subject is the requested subject DN (:func:`.connectors.verify_request`)
— then issued with the CA's key, and the chain (or the refusal) goes back with the poller's
next claim (``answers``: one request per certificate instead of a claim and a result; the
server's first claim answer says whether it takes them, else each is posted on its own to
``/ra/requests/<id>/result``). Answers still held when the loop stops are posted on their own.

It runs on the core HTTP client (:class:`signpeer_core.httpclient.HttpClient`: kept-alive
connections, the CA peer's client certificate, the error tree) made by :func:`ra_client` for the
RA operations under the peer protocol's base path, with one thread per poller; each poller sends
its claims on a connection of its own (:class:`~signpeer_core.httpclient.KeptConnection`, the
same TLS settings and errors at a fraction of the cost per call). A transport
failure (:class:`~signpeer_core.errors.TransportError`) counts as an error and the poll is
retried; any other error is the server's answer (a late or second answer is refused).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from signpeer_core.api import (
    HttpClient,
    KeptConnection,
    PrivateKey,
    SignpeerError,
    TransportError,
    base_url,
    certificate_pem,
)
from signpeer_onetimecrypto.commands import DEFAULT_BATCH
from signpeer_onetimecrypto.connectors import CARefusedError, CertificateRequest, issue_for_request

#: A poller issues the requests of one claim one after the other (``--batch``), and each is leased to
#: it for ``lease`` seconds from the claim: past this share of the lease it starts no more of them
#: (they are offered again once the lease has passed, so none is issued twice) and sends an answer
#: at once rather than with its next claim.
LATE_IN_LEASE = 0.5

log = logging.getLogger("signpeer.ra")

#: The peer protocol's base path: the RA operations (``/ra/claim``, ``/ra/requests/<id>/result``)
#: are served under it by the peer endpoint.
PEER_BASE_PATH = "/signserver/peer/v1"

Issuer = Callable[[CertificateRequest], list[x509.Certificate] | None]
#: One answer to send: (request id, the result body, "issued" or "refused").
Answer = tuple[str, dict[str, Any], str]


def ra_client(url: str, cert: str | Path, key: str | Path, cacert: str | Path | None = None,
              timeout: float = 40.0, max_connections: int = 16, key_password: str | None = None) -> HttpClient:
    """A client of the RA operations of the signing server at ``url`` (``https://host:port``)."""
    return HttpClient(base_url(url, PEER_BASE_PATH), cafile=cacert, cert=cert, key=key, key_password=key_password,
                      timeout=timeout, max_connections=max_connections,
                      headers={"User-Agent": "signpeer-ra/0.1", "Accept": "application/json"})


@dataclass
class RAStats:
    """What the loop did (``signpeer ra serve`` prints it on exit)."""

    issued: int = 0
    refused: int = 0
    discarded: int = 0  # answers the server refused (late or second)
    unanswered: int = 0  # offers the issuer left unanswered (returned None)
    errors: int = 0  # transport failures
    peak_pollers: int = 0
    moved: int = 0  # poll connections closed to land on another server process (RALoop._crowded)
    issue_seconds: list[float] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return self.issued + self.refused


class RALoop:
    """Long-poll pollers between ``min_parallel`` and ``max_parallel``, each in a thread."""

    def __init__(self, client: HttpClient, issuer: Issuer, queues: list[str] | None = None,
                 min_parallel: int = 2, max_parallel: int = 8, wait: float = 25.0, batch: int = DEFAULT_BATCH,
                 lease: float = 10.0, report: Callable[[str], None] | None = None) -> None:
        if not 1 <= min_parallel <= max_parallel:
            raise ValueError("need 1 <= min_parallel <= max_parallel")
        self.client = client
        self.issuer = issuer
        self.queues = queues or None
        self.min_parallel = min_parallel
        self.max_parallel = max_parallel
        self.wait = wait
        self.batch = batch
        self.lease = lease
        self.report = report or (lambda line: None)
        self.stats = RAStats()
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._pollers = 0
        self._busy = 0
        self._threads: list[threading.Thread] = []
        self._local = threading.local()  # each poller thread's KeptConnection
        #: Whether the server takes answers with the next claim (one request per certificate
        #: instead of two); learnt from its first claim answer, None until then.
        self._with_claim: bool | None = None
        #: The server process (its claim answer's ``process``) each poller thread's connection
        #: is on: see :meth:`_crowded`.
        self._landed: dict[int, str] = {}

    @classmethod
    def with_ca(cls, client: HttpClient, ca_key: PrivateKey, ca_chain: list[x509.Certificate], **kwargs: Any) -> RALoop:
        return cls(client, lambda req: issue_for_request(ca_key, ca_chain, req), **kwargs)

    # -- running ------------------------------------------------------------------------------
    def start(self) -> RALoop:
        for _ in range(self.min_parallel):
            self._spawn(extra=False)
        return self

    def run(self, until: Callable[[RAStats], bool] | None = None) -> RAStats:
        """Serve until :attr:`stop` is set (or ``until(stats)`` is true); returns the statistics."""
        self.start()
        try:
            while not self.stop.wait(0.05):
                if until is not None and until(self.stats):
                    break
        finally:
            self.close()
        return self.stats

    def close(self, timeout: float | None = None) -> None:
        """Stop polling; pollers in a long poll finish it first (at most ``wait`` seconds)."""
        self.stop.set()
        for t in list(self._threads):
            t.join(timeout if timeout is not None else self.wait + 15)

    def _spawn(self, extra: bool) -> None:
        with self._lock:
            if self._pollers >= self.max_parallel:
                return
            self._pollers += 1
            self.stats.peak_pollers = max(self.stats.peak_pollers, self._pollers)
        thread = threading.Thread(target=self._poller, args=(extra,), name="ra-poller", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _poller(self, extra: bool) -> None:
        #: Answers to send with this poller's next claim (servers that take them there).
        pending: list[Answer] = []
        try:
            backoff = 0.5
            while not self.stop.is_set():
                sending, pending = pending, []
                try:
                    offers = self._claim(sending)
                    backoff = 0.5
                except SignpeerError as exc:
                    self._undelivered(sending, exc)
                    self.stats.errors += 1
                    self.report(f"RA poll failed: {exc.message}; retrying in {backoff:g} s")
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                if not offers:
                    if extra:
                        return  # idle again: back down to min_parallel
                    continue
                with self._lock:
                    self._busy += 1
                    all_busy = self._busy >= self._pollers
                if all_busy:
                    self._spawn(extra=True)
                claimed_at = time.monotonic()
                try:
                    for offer in offers:
                        elapsed = time.monotonic() - claimed_at
                        if elapsed > self.lease * LATE_IN_LEASE:
                            # A slow issuer and a batch: this claim's lease is about to run out, and
                            # another poller may be offered the rest. Leave them (offered again once
                            # the lease has passed); answer what was issued now, not with the next claim.
                            self._deliver_all(pending)
                            pending = []
                            break
                        answer = self._handle(offer)
                        if answer is None:
                            continue
                        if self._with_claim and time.monotonic() - claimed_at <= self.lease * LATE_IN_LEASE:
                            pending.append(answer)
                        else:
                            self._deliver(answer)
                finally:
                    with self._lock:
                        self._busy -= 1
        finally:
            self._deliver_all(pending)  # stopping: no next claim to carry them
            conn = getattr(self._local, "conn", None)
            if conn is not None:
                conn.close()
            with self._lock:
                self._pollers -= 1
                self._landed.pop(threading.get_ident(), None)

    def landed(self) -> dict[int, str]:
        """The server process each poller's connection is on, by poller thread (as last answered)."""
        with self._lock:
            return dict(self._landed)

    def _crowded(self, process: Any, processes: Any) -> bool:
        """Record where this poller's connection landed; True when it should reconnect.

        Against ``serve --workers N`` each kept-alive connection stays with the process that
        accepted it, and a process without a poll of its own cannot hand its requests to one
        (about twice the work for each). So a poller that shares its process with another, while
        fewer processes hold polls than could (the pollers, at most N), closes its connection:
        the next claim connects anew and the server's kernel places it again. A poller that moves
        drops its entry until its next claim says where it landed, so the pollers left on the
        process it leaves count one fewer: of each pair of pollers sharing a process, one moves at
        a time, and a poller alone on its process stays.
        """
        me = threading.get_ident()
        with self._lock:
            if not isinstance(process, str) or not isinstance(processes, int):
                self._landed.pop(me, None)  # a server that does not say: nothing to steer
                return False
            self._landed[me] = process
            held = list(self._landed.values())
            if len(set(held)) >= min(len(held), processes) or held.count(process) < 2:
                return False
            del self._landed[me]
            self.stats.moved += 1
            return True

    def _claim(self, answers: list[Answer]) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"max": self.batch, "wait": self.wait, "lease": self.lease}
        if self.queues:
            body["queues"] = self.queues
        if answers:
            body["answers"] = [{**result, "id": rid} for rid, result, _ in answers]
            for answer in answers:  # counted as sent (the claim answers only when there is work); corrected below
                self._recorded(answer)
        conn = self._connection()
        reply = conn.json("POST", "/ra/claim", body, timeout=self.wait + 15)
        if self._crowded(reply.get("process"), reply.get("processes")):
            conn.close()  # the next claim connects anew
            self._local.conn = None
        if self._with_claim is None:
            self._with_claim = "answers" in reply  # a server that takes answers with a claim says so
        if answers:
            outcomes = reply.get("answers")
            if isinstance(outcomes, list):
                self._settle(answers, outcomes)
            else:  # not taken (a server of an older version): send them the old way
                for answer in answers:
                    self._recorded(answer, -1)
                    self._deliver(answer)
        return list(reply.get("requests", []))

    def _connection(self) -> KeptConnection:
        """This poller thread's own kept-alive connection for its claims (a fraction of the
        shared client's cost per call; the same errors)."""
        conn: KeptConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.client.connection()
        return conn

    def _handle(self, offer: dict[str, Any]) -> Answer | None:
        """Issue for one offer (or refuse); the answer to send, None when the issuer left it unanswered."""
        rid = str(offer.get("id") or offer.get("transactionId"))
        t0 = time.perf_counter()
        try:
            request = CertificateRequest.from_json(offer)
            chain = self.issuer(request)
            if chain is None:
                # The issuer chose not to answer (e.g. held for manual approval): the lease runs
                # out and the request is offered again until its deadline.
                with self._lock:
                    self.stats.unanswered += 1
                return None
            self.stats.issue_seconds.append(time.perf_counter() - t0)
            return rid, {"chain": certificate_pem(chain)}, "issued"
        except CARefusedError as exc:
            return rid, {"error": exc.message}, "refused"
        except Exception as exc:  # a CA fault must reach the RA as a refusal, not a silent timeout
            log.exception("issuing for RA request %s failed", rid)
            return rid, {"error": f"the CA failed to issue: {type(exc).__name__}: {exc}"}, "refused"

    def _deliver_all(self, answers: list[Answer]) -> None:
        for answer in answers:
            self._deliver(answer)

    def _deliver(self, answer: Answer) -> None:
        """Post one answer on its own (``/ra/requests/<id>/result``)."""
        rid, body, outcome = answer
        try:
            self.client.request("POST", f"/ra/requests/{rid}/result", json=body)
        except TransportError as exc:
            # The claim lease runs out and the request is offered again: nothing is lost.
            self.stats.errors += 1
            self.report(f"could not deliver the answer to {rid}: {exc.message}")
            return
        except SignpeerError as exc:
            self._discarded(rid, exc.message)
            return
        self._recorded(answer)

    def _settle(self, answers: list[Answer], outcomes: list[Any]) -> None:
        """What the server did with the answers a claim carried (its ``answers``, by id)."""
        by_id = {o.get("id"): o for o in outcomes if isinstance(o, dict)}
        for answer in answers:
            outcome = by_id.get(answer[0]) or {"error": "the server did not say"}
            if outcome.get("state") != "answered":
                self._recorded(answer, -1)
                self._discarded(answer[0], str(outcome.get("error")))

    def _undelivered(self, answers: list[Answer], exc: SignpeerError) -> None:
        """A claim carrying ``answers`` failed: the server may not have seen them. Refused before
        it looked at them (a 4xx): sent again on their own. Lost on the way: the claims' leases
        run out and the requests are offered again, as for a failed result."""
        for answer in answers:
            self._recorded(answer, -1)
            if isinstance(exc, TransportError):
                self.stats.errors += 1
                self.report(f"could not deliver the answer to {answer[0]}: {exc.message}")
            else:
                self._deliver(answer)

    def _recorded(self, answer: Answer, count: int = 1) -> None:
        """Count an answer the server took (``count`` -1: one counted too early, when it was sent)."""
        rid, body, outcome = answer
        with self._lock:
            if outcome == "issued":
                self.stats.issued += count
            else:
                self.stats.refused += count
        if outcome != "issued" and count > 0:
            self.report(f"refused {rid}: {body['error']}")

    def _discarded(self, rid: str, message: str) -> None:
        with self._lock:
            self.stats.discarded += 1
        self.report(f"answer to {rid} discarded by the server: {message}")

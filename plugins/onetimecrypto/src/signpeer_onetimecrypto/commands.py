"""``signpeer ra``: the RA queue of one-time keys, seen from both sides.

* ``signpeer ra requests`` — on the signing server: queued requests (pending, claimed,
  answered, expired) with their ages, and the CA peers that poll; ``signpeer ra purge``
  deletes old answered and expired ones.
* ``signpeer ra serve <url>`` — on the CA side: the RA loop (:mod:`.raclient`) with minimum and
  maximum parallel long polls, issuing with ``--issuer-cert``/``--issuer-key``.

The peer connector's ``signpeer connector serve-ra <url>`` is the same command
(:class:`ServeRACommand`, added through the peer connector's ``signpeer_connector_commands``
hook): it takes its options from :func:`add_serve_arguments` and runs :func:`serve`.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from signpeer_core.api import (
    Admin,
    AuditEvent,
    AuthenticationError,
    AuthorizationError,
    BadRequestError,
    CertificateRequest,
    Command,
    CommandContext,
    ServerUnreachableError,
    SignpeerError,
    TLSError,
)

if TYPE_CHECKING:
    from cryptography import x509

    from signpeer_onetimecrypto.raqueue import RaRequest

STATES = ("pending", "claimed", "answered", "expired")


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


class RACommand(Command):
    name = "ra"
    help = "RA queue of one-time keys: list requests (signing server) or serve them (CA side)"
    description = ("RA mode of one-time keys (OneTimeCryptoWorker with PeersRAConnector).\n"
                   "  signpeer ra requests [--state S] [--limit N] [--json]\n"
                   "  signpeer ra purge [--older-than HOURS]\n"
                   "  signpeer ra serve <url> --cert C --key K --cacert CA --issuer-cert IC --issuer-key IK\n"
                   "                    [--min-parallel 2] [--max-parallel 8] [--queue CANAME ...]")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
        p = sub.add_parser("requests", help="list queued RA requests with their ages")
        p.add_argument("--state", action="append", choices=STATES, help="only these states (repeatable)")
        p.add_argument("--limit", type=int, default=100, help="at most this many, newest first (default 100)")
        p.add_argument("--json", action="store_true", help="print JSON")
        p = sub.add_parser("purge", help="delete answered and expired requests older than some hours")
        p.add_argument("--older-than", type=float, default=24.0, metavar="HOURS",
                       help="age in hours (default 24)")
        add_serve_arguments(sub.add_parser("serve", help=SERVE_HELP))

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        if args.action == "requests":
            return self._requests(args, ctx)
        if args.action == "purge":
            if args.older_than < 0:
                raise BadRequestError("--older-than must not be negative")
            from signpeer_onetimecrypto.raqueue import RaQueue

            store = ctx.services(load=False).store

            def audit(conn: Any, removed: int) -> None:
                store.write_audit(conn, [AuditEvent("RA_REQUESTS_PURGED", "RA", Admin.cli(), details={
                    "OLDER_THAN_HOURS": f"{args.older_than:g}", "DELETED": str(removed)})])

            removed = RaQueue(store.database).purge(time.time() - args.older_than * 3600, audit)
            ctx.print(f"Deleted {removed} answered or expired RA requests older than {args.older_than:g} h")
            return 0
        return serve(args, ctx, "signpeer ra serve")

    # -- signing server side --------------------------------------------------------------------
    def _requests(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        from signpeer_onetimecrypto.ra import CONNECTED_WITHIN
        from signpeer_onetimecrypto.raqueue import RaQueue  # SQLAlchemy: imported when the command runs

        ra = RaQueue(ctx.services(load=False).store.database)
        now = time.time()
        rows = ra.requests(states=args.state, now=now, limit=args.limit)
        pollers = ra.pollers()
        if args.json:
            ctx.print(json.dumps({
                "requests": [{"id": r.id, "queue": r.queue, "worker": r.worker, "state": r.effective_state(now),
                              "ageSeconds": round(now - r.created, 3), "claims": r.claims,
                              "claimedBy": r.claimed_by, "deadlineInSeconds": round(r.deadline - now, 3),
                              "answeredBy": r.answered_by, "error": r.error, **_identity(r)} for r in rows],
                "caPeers": [{"identity": p.identity, "queues": p.queues, "lastPollSecondsAgo": round(now - p.last_poll, 3),
                             "polls": p.polls} for p in pollers]}, indent=2))
            return 0
        counts: dict[str, int] = {s: 0 for s in STATES}
        for r in ra.requests(now=now, limit=100000):
            counts[r.effective_state(now)] = counts.get(r.effective_state(now), 0) + 1
        ctx.print("RA requests: " + ", ".join(f"{counts[s]} {s}" for s in STATES))
        if rows:
            ctx.print(f"{'ID':<28} {'QUEUE':<14} {'WORKER':<16} {'STATE':<9} {'AGE':>7} {'CLAIMS':>6} "
                      f"{'DEADLINE':>9}  DETAIL")
            for r in rows:
                state = r.effective_state(now)
                if state == "answered":
                    detail = f"refused: {r.error}" if r.error else f"issued, answered by {r.answered_by} " \
                             f"after {_age((r.answered_at or now) - r.created)}"
                elif state == "claimed":
                    detail = f"claimed by {r.claimed_by} {_age(now - (r.claimed_at or now))} ago"
                elif state == "expired":
                    detail = r.error or "deadline passed without an answer"
                else:
                    detail = "waiting for a CA peer"
                deadline = "-" if state in ("answered", "expired") else _age(r.deadline - now)
                claims = _identity(r)["tokenClaims"]
                if claims:
                    detail += "; token claims " + ", ".join(f"{k}={v}" for k, v in claims.items())
                ctx.print(f"{r.id[:28]:<28} {r.queue[:14]:<14} {r.worker[:16]:<16} {state:<9} {_age(now - r.created):>7} "
                          f"{r.claims:>6} {deadline:>9}  {detail}")
        if pollers:
            for p in pollers:
                connected = "connected" if now - p.last_poll <= CONNECTED_WITHIN else "not connected"
                ctx.print(f"CA peer {p.identity}: queues {p.queues}, last poll {_age(now - p.last_poll)} ago "
                          f"({connected}), {p.polls} polls")
        else:
            ctx.print("No CA peer has polled the RA queue yet.")
        return 0


# -- CA side (also ``signpeer connector serve-ra``) ------------------------------------------------
SERVE_HELP = "CA side: collect, issue and answer RA requests (long poll)"


def _identity(row: RaRequest) -> dict[str, Any]:
    """Who the request is for: the filled user name and subject DN, and the token claims the
    templates used (what the CA peer sees too)."""
    try:
        data = json.loads(row.request)
    except ValueError:
        data = {}
    return {"username": data.get("username"), "subjectDn": data.get("subjectDn"),
            "subjectAltName": data.get("subjectAltName") or None, "tokenClaims": data.get("tokenClaims") or {}}


#: Requests one claim takes at most (``signpeer ra serve --batch``; :class:`.raclient.RALoop`'s
#: default too). A claim answers with what is claimable at once and never waits to fill a batch,
#: so a lone request goes alone as before; under a backlog one poll takes up to this many (issued
#: one after the other, their answers riding on the poller's next claim; see ``LATE_IN_LEASE`` in
#: :mod:`.raclient` for a slow issuer): about a third less of the CA side's CPU per certificate and
#: fewer claims for the server, where one request per poll (EJBCA's way) held 200/s offered to
#: 93-151/s answered (docs/performance.md, one-time "Round 8 (onetime8)").
DEFAULT_BATCH = 4


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``signpeer ra serve`` and ``signpeer connector serve-ra`` (one definition)."""
    p.add_argument("url", help="https://host:port of the signing server")
    p.add_argument("--cert", required=True, help="the CA peer's TLS client certificate (PEM)")
    p.add_argument("--key", required=True, help="its private key (PEM)")
    p.add_argument("--cacert", help="CA certificate(s) to trust for the server's TLS certificate")
    p.add_argument("--issuer-cert", required=True, help="issuing CA certificate (PEM; its issuers may follow)")
    p.add_argument("--issuer-key", required=True, help="issuing CA private key (PEM)")
    p.add_argument("--min-parallel", type=int, default=2, help="long polls kept waiting while idle (default 2)")
    p.add_argument("--max-parallel", type=int, default=8, help="most parallel requests when busy (default 8)")
    p.add_argument("--queue", action="append", help="serve only this CANAME queue (repeatable; default all)")
    p.add_argument("--wait", type=float, default=25.0, help="seconds one long poll waits (default 25)")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                   help=f"most requests one poll claims (default {DEFAULT_BATCH}; a poll never waits to fill it: "
                        "1 is EJBCA's one request per poll)")
    p.add_argument("--require-claim", action="append", default=[], metavar="NAME=VALUE",
                   help="CA policy: refuse requests whose token claims (those the worker's templates used) "
                        "lack NAME with VALUE (repeatable)")
    p.add_argument("--count", type=int, help="exit after answering this many requests")
    p.add_argument("--duration", type=float, help="exit after this many seconds")


#: Exit codes when the server cannot be used, the ones ``signpeer connector`` documents (it runs
#: this command as ``serve-ra``): refused 3, TLS 4, unreachable 5; any other failure 1.
EXIT_CODES: dict[type[SignpeerError], int] = {
    AuthenticationError: 3, AuthorizationError: 3, TLSError: 4, ServerUnreachableError: 5,
}


def _failed(ctx: CommandContext, label: str, exc: SignpeerError) -> int:
    ctx.error(f"{label}: {exc.message}")
    return next((code for cls, code in EXIT_CODES.items() if isinstance(exc, cls)), exc.exit_code)


def serve(args: argparse.Namespace, ctx: CommandContext, label: str) -> int:
    """Run the RA loop as parsed by :func:`add_serve_arguments`; ``label`` prefixes error messages."""
    from signpeer_core.api import IssuingCA
    from signpeer_onetimecrypto.connectors import check_token_claims, issue_for_request
    from signpeer_onetimecrypto.raclient import RALoop, ra_client

    if not 1 <= args.min_parallel <= args.max_parallel:
        raise BadRequestError("--min-parallel must be at least 1 and at most --max-parallel")
    required: list[tuple[str, str]] = []
    for item in args.require_claim:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise BadRequestError(f"--require-claim {item!r}: write NAME=VALUE, e.g. email_verified=true")
        required.append((name.strip(), value))
    try:
        ca = IssuingCA.from_files(args.issuer_cert, args.issuer_key)
        client = ra_client(args.url, args.cert, args.key, args.cacert, timeout=args.wait + 15,
                           max_connections=args.max_parallel + 2)
    except SignpeerError as exc:
        return _failed(ctx, label, exc)
    try:
        ping: dict[str, Any] = client.json("GET", "/ping")
    except SignpeerError as exc:
        client.close()
        return _failed(ctx, label, exc)
    ctx.print(f"Serving RA requests of {client.base_url} ({ping.get('server', '?')}), queues "
              f"{', '.join(args.queue) if args.queue else 'all'}, {args.min_parallel}-{args.max_parallel} "
              "parallel long polls")
    chain = [ca.certificate, *ca.chain]

    def issuer(request: CertificateRequest) -> list[x509.Certificate]:
        check_token_claims(request, required)
        return issue_for_request(ca.key, chain, request)

    loop = RALoop(client, issuer, queues=args.queue, min_parallel=args.min_parallel,
                  max_parallel=args.max_parallel, wait=args.wait, batch=args.batch, report=ctx.error)
    end = time.monotonic() + args.duration if args.duration else None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: loop.stop.set())

    def done(stats: Any) -> bool:
        return (args.count is not None and stats.answered >= args.count) or \
            (end is not None and time.monotonic() >= end)

    try:
        stats = loop.run(until=done)
    except KeyboardInterrupt:
        loop.stop.set()
        stats = loop.stats
    finally:
        loop.close(timeout=1.0)
        client.close()
    ctx.print(f"Answered {stats.answered} RA requests: {stats.issued} issued, {stats.refused} refused, "
              f"{stats.discarded} answers discarded by the server, {stats.errors} transport errors, "
              f"up to {stats.peak_pollers} parallel polls, {stats.moved} moved to another server process")
    return 0


COMMANDS = [RACommand]


class ServeRACommand(Command):
    """``signpeer connector serve-ra``: the RA loop, as ``signpeer ra serve``."""

    name = "serve-ra"
    help = SERVE_HELP + " (as signpeer ra serve)"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        add_serve_arguments(parser)

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        return serve(args, ctx, "signpeer connector serve-ra")

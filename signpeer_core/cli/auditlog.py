"""``signpeer auditlog``: the audit log, filtered (SignServer's event names)."""

from __future__ import annotations

import argparse
import datetime as dt
import json

from signpeer_core.admin import WorkerAdmin
from signpeer_core.audit import Admin
from signpeer_core.cli.auditquery import FIELDS as AUDIT_FIELDS
from signpeer_core.cli.auditquery import run_query
from signpeer_core.cli.base import Command, CommandContext
from signpeer_core.cli.criteria import OPERATORS, criterion_type, non_negative
from signpeer_core.errors import BadRequestError
from signpeer_core.identifiers import is_number, worker_id_of


def _timestamp(value: str) -> float:
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not an ISO date/time; write e.g. 2025-06-01 or "
                                         "2025-06-01T12:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a time without zone is local time
    return moment.timestamp()


def _positive(value: str) -> int:
    n = int(value) if is_number(value) and len(value) <= 9 else 0
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not '{value}'")
    return n


class AuditLogCommand(Command):
    name = "auditlog"
    help = "show the audit log (newest first), with filters; --verify checks its integrity"
    description = ("Each record: time, event (SignServer's names: SET_WORKER_CONFIG, KEYGEN, GENCSR, "
                   "CERTINSTALLED, ...), module, administrator, worker, the node that wrote it and details. "
                   "Example: signpeer auditlog --event KEYGEN --worker CMSSigner --since 2025-06-01. "
                   "signpeer auditlog --verify recomputes the records' HMAC chain and names the first record "
                   "that was changed, inserted, back-dated or removed (exit code 1).")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--event", help="only this event type, e.g. SET_WORKER_CONFIG")
        parser.add_argument("--worker", help="only this worker (id or name)")
        parser.add_argument("--admin", help="administrator name contains this text")
        parser.add_argument("--node", help="only records written by this node (its node_id)")
        parser.add_argument("--since", type=_timestamp, help="from this ISO date/time on")
        parser.add_argument("--until", type=_timestamp, help="up to this ISO date/time")
        parser.add_argument("--limit", "-limit", type=_positive, help="at most this many records (default 100)")
        parser.add_argument("--json", action="store_true", help="machine-readable output, details in full")
        parser.add_argument("--verify", action="store_true",
                            help="check the HMAC chain of every record instead of listing them")
        signserver = parser.add_argument_group(
            "SignServer's syntax", 'auditlog -query -limit <n> [-criteria "<field> <op> <value>"]... [-from <index>] '
            "[-header]; fields: " + ", ".join(AUDIT_FIELDS) + "; operators: " + ", ".join(OPERATORS))
        signserver.add_argument("-query", action="store_true", help="query with SignServer's criteria")
        signserver.add_argument("-criteria", action="append", default=[], type=criterion_type(tuple(AUDIT_FIELDS)),
                                help='"<field> <op> <value>" (repeatable, ANDed)')
        signserver.add_argument("-from", dest="start", type=non_negative, default=0,
                                help="first record (0-based, newest first)")
        signserver.add_argument("-header", action="store_true", help="print SignServer's column header")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        if args.query:
            return run_query(args, ctx)
        if args.criteria or args.start or args.header:
            raise BadRequestError("-criteria, -from and -header go with -query (SignServer's syntax): "
                                  "signpeer auditlog -query -limit 10 -criteria \"eventType EQ KEYGEN\" -header")
        services = ctx.services(load=False)
        if args.verify:
            result = services.store.verify_audit_log()
            if result.intact:
                ctx.print(f"Audit log intact: {result.records} records verified.")
                return 0
            where = f" at record {result.broken_id}" if result.broken_id is not None else ""
            ctx.error(f"signpeer auditlog: the audit log is broken{where}: {result.problem}. "
                      f"{result.records} records were checked.")
            return 1
        worker_id = None
        if args.worker:
            worker_id = worker_id_of(args.worker) or WorkerAdmin(services, Admin.cli()).worker_id(args.worker)
        events = services.store.audit_events(event=args.event, worker_id=worker_id, admin=args.admin,
                                             since=args.since, until=args.until, limit=args.limit or 100,
                                             node=args.node)
        if args.json:
            ctx.print(json.dumps([{
                "id": e.id, "time": dt.datetime.fromtimestamp(e.time, dt.UTC).isoformat(),
                "event": e.event, "module": e.module, "outcome": e.outcome, "admin": e.admin.name,
                "issuer": e.admin.issuer, "serial": e.admin.serial, "worker_id": e.worker_id,
                "node": e.node, "details": e.details} for e in events], indent=2))
            return 0
        for e in events:
            when = dt.datetime.fromtimestamp(e.time, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            parts = [f"EVENT: {e.event}", f"MODULE: {e.module}", f"OUTCOME: {e.outcome}",
                     f"ADMINISTRATOR: {e.admin.name}"]
            if e.admin.issuer:
                parts += [f"ISSUER: {e.admin.issuer}", f"SERIAL_NUMBER: {e.admin.serial}"]
            if e.worker_id is not None:
                parts.append(f"WORKER_ID: {e.worker_id}")
            if e.node is not None:
                parts.append(f"NODEID: {e.node}")
            for key, value in e.details.items():
                text = str(value).replace("\n", " ")
                parts.append(f"{key}: {text if len(text) <= 80 else text[:60] + '... (--json for all)'}")
            ctx.print(f"{when} " + "; ".join(parts))
        if not events:
            ctx.print("No audit records match.")
        return 0

"""SignServer's ``auditlog -query -limit N [-criteria "<field> <op> <value>"]… [-from I] [-header]``.

SignServer's audit fields map to signpeer's audit records: ``timeStamp`` (milliseconds since
1970, or ``yyyy-MM-dd HH:mm:ss``), ``sequenceNumber`` (the record id), ``eventType``,
``eventStatus`` (SUCCESS/FAILURE), ``module``, ``authToken`` (the administrator), ``customId``
(the administrator certificate's issuer), ``searchDetail1`` (its serial number),
``searchDetail2`` (the worker id), ``additionalDetails`` (the details), ``nodeId`` (the node that
wrote the record; ``null`` for records from before nodes were recorded). ``service`` is not
recorded by signpeer: criteria on it are refused. Output as SignServer's: one line per record,
newest first.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from signpeer_core.audit import AuditEvent
from signpeer_core.cli.base import CommandContext
from signpeer_core.cli.criteria import Criterion
from signpeer_core.errors import BadRequestError

#: SignServer's audit field → signpeer's column (None: not recorded).
FIELDS: dict[str, str | None] = {
    "additionalDetails": "details", "authToken": "admin", "customId": "issuer", "eventStatus": "outcome",
    "eventType": "event", "module": "module", "nodeId": "node", "searchDetail1": "serial",
    "searchDetail2": "worker_id", "sequenceNumber": "id", "service": None, "timeStamp": "time",
}
HEADER_NAMES = ("Time, Outcome, Event, Module, Admin Subject, Admin Issuer, Admin Serial Number, Worker ID, Node, "
                "Details")
HEADER_FIELDS = ("timeStamp, eventStatus, eventType, module, authToken, customId, searchDetail1, searchDetail2, "
                 "nodeId, additionalDetails")


def _time_value(text: str) -> float:
    """SignServer's timeStamp value: milliseconds since 1970, or a date ``yyyy-MM-dd HH:mm:ss``
    (UTC unless it carries an offset)."""
    if text.isascii() and text.isdigit() and len(text) <= 15:
        return int(text) / 1000.0
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadRequestError(f"Invalid date specified: timeStamp '{text}': write milliseconds since 1970 or "
                              "yyyy-MM-dd HH:mm:ss") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def to_term(criterion: Criterion) -> tuple[str, str, Any]:
    """A storage term (column, operator, typed value) for one SignServer criterion."""
    column = FIELDS[criterion.field]
    if column is None:
        raise BadRequestError(f"signpeer's audit records do not record '{criterion.field}'; query by another field "
                              f"({', '.join(f for f, c in FIELDS.items() if c)})")
    value: Any = criterion.value
    if value is not None and criterion.op != "LIKE":
        if column == "time":
            value = _time_value(value)
        elif column in ("id", "worker_id"):
            if not (value.isascii() and value.isdigit() and len(value) <= 18):
                raise BadRequestError(f"Invalid critera, expected a numeric value: {criterion.field} "
                                      f"{criterion.op} {value}")
            value = int(value)
        elif column == "outcome":
            value = value.upper()
    return column, criterion.op, value


def _java_map(details: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in details.items()) + "}"


def render(event: AuditEvent) -> str:
    """One record as SignServer's ``auditlog -query`` prints it."""
    def text(value: object) -> str:
        return "null" if value is None or value == "" else str(value)

    when = dt.datetime.fromtimestamp(event.time, dt.UTC).strftime("%Y-%m-%d %H:%M:%S+0000")
    return ", ".join([when, event.event, event.outcome, event.module, text(event.admin.name),
                      text(event.admin.issuer), text(event.admin.serial), text(event.worker_id), text(event.node),
                      _java_map(event.details)])


def run_query(args: argparse.Namespace, ctx: CommandContext) -> int:
    """``auditlog -query``: a limit is required, as in SignServer."""
    if args.limit is None:
        raise BadRequestError("Must specify a limit: auditlog -query -limit <number> [-criteria \"<field> <op> "
                              "<value>\"]... [-from <index>] [-header]")
    terms = [to_term(c) for c in args.criteria]
    events = ctx.services(load=False).store.query_audit(terms, offset=args.start, limit=args.limit)
    if args.header:
        ctx.print(HEADER_NAMES)
        ctx.print(HEADER_FIELDS)
    for event in events:
        ctx.print(render(event))
    ctx.print("\n\n")
    return 0

"""The Audit Log page: the records of every change, of every node, filtered (Auditor role)."""

from __future__ import annotations

import datetime as dt

from starlette.responses import Response

from signpeer_adminweb.web import AdminWeb, Ctx
from signpeer_core.api import AuditEvent, BadRequestError, SignpeerError, is_number, shorten, worker_id_of

EVENT_NAMES = ("SET_WORKER_CONFIG", "RELOAD_WORKER_CONFIG", "SET_GLOBAL_PROPERTY", "REMOVE_GLOBAL_PROPERTY",
               "KEYGEN", "KEYTEST", "KEYREMOVE", "GENCSR", "CERTINSTALLED", "CERTCHAININSTALLED", "KEYSELECTED")


def _parse_time(text: str, label: str) -> float | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadRequestError(f"{label}: '{text}' is not a date and time like 2026-01-31T14:00") from None
    if value.tzinfo is None:
        value = value.astimezone()  # the server's time zone, as the table shows
    return value.timestamp()


def auditlog(web: AdminWeb, ctx: Ctx) -> Response:
    q = ctx.request.query_params
    filters = {k: q.get(k, "").strip() for k in ("event", "worker", "admin", "node", "from", "to", "limit")}
    error = None
    events: list[AuditEvent] = []
    try:
        worker_id = None
        if filters["worker"]:
            found = web.admin(ctx).find_worker_id(filters["worker"])
            worker_id = found if found is not None else worker_id_of(filters["worker"])
            if worker_id is None:
                raise BadRequestError(f"No worker '{shorten(filters['worker'])}'.")
        since = _parse_time(filters["from"], "From")
        until = _parse_time(filters["to"], "To")
        if filters["limit"] and not (is_number(filters["limit"]) and len(filters["limit"]) <= 9):
            raise BadRequestError(f"Max results must be a whole number, not '{shorten(filters['limit'])}'.")
        limit = int(filters["limit"] or 100)
        if not 1 <= limit <= 10000:
            raise BadRequestError("Max results must be between 1 and 10000.")
        events = web.services.store.audit_events(
            event=filters["event"] or None, worker_id=worker_id, admin=filters["admin"] or None,
            since=since, until=until, limit=limit, node=filters["node"] or None)
    except SignpeerError as exc:
        error = exc.message
    return web.render(ctx, "auditlog.html", http_status=400 if error else 200, active="auditlog", events=events,
                      filters=filters, error=error, event_names=EVENT_NAMES)

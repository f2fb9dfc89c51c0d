"""The Workers page: every stored worker with its loaded status; Reload all."""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import RedirectResponse, Response

from signpeer_adminweb.web import PREFIX, SECURITY_HEADERS, AdminWeb, Ctx


def home(web: AdminWeb, ctx: Ctx) -> Response:
    if ctx.caller.can_view:
        return RedirectResponse(f"{PREFIX}/workers", status_code=303, headers=SECURITY_HEADERS)
    return web.render(ctx, "home.html", active="")


def pending(web: AdminWeb, wid: int, stored: dict[str, str]) -> bool:
    """Whether the stored configuration differs from what this process has loaded."""
    worker = web.services.runtime.by_id.get(wid)
    if worker is None:
        return True
    return worker.config.as_dict() != {k.upper(): v for k, v in stored.items()}


def _reload_all(web: AdminWeb, ctx: Ctx) -> Response:
    generation = web.admin(ctx).reload("all")
    return web.redirect(ctx, f"{PREFIX}/workers", f"Reloaded the configuration of all workers (generation {generation}).")


#: Form actions: ``action`` → handler.
ACTIONS: dict[str, Callable[[AdminWeb, Ctx], Response]] = {"reload": _reload_all}


def workers(web: AdminWeb, ctx: Ctx) -> Response:
    error = None
    if ctx.form is not None:
        action = ACTIONS.get(ctx.field("action"))
        if action is not None:
            return action(web, ctx)
        error = "Unknown action."
    # Status of the workers this process has loaded; viewing never triggers a reload (that would
    # silently apply pending changes), so a worker created since the last reload is "not loaded".
    statuses = {w.id: w.status() for w in web.services.runtime.workers()}
    rows = []
    for wid, props in sorted(web.services.store.all_worker_properties().items()):
        status = statuses.get(wid)
        rows.append({
            "id": wid, "name": props.get("NAME", f"Worker{wid}"),
            "implementation": props.get("IMPLEMENTATION_CLASS", ""),
            "type": props.get("TYPE", ""),
            "state": status.state if status else "not loaded",
            "reasons": status.reasons if status else ["not loaded yet; click Reload"],
            "pending": pending(web, wid, props),
        })
    return web.render(ctx, "workers.html", http_status=400 if error else 200, active="workers", rows=rows,
                      error=error)

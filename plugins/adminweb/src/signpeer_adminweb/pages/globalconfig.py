"""The Global Configuration page: global properties, stored and loaded; set, remove, Reload."""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import Response

from signpeer_adminweb.web import PREFIX, AdminWeb, Ctx, check_secret, error_status, form_action
from signpeer_core.api import MASK, BadRequestError, NotFoundError, SignpeerError, WorkerAdmin, is_secret_key

URL = f"{PREFIX}/globalconfig"


def _set_property(ctx: Ctx, admin: WorkerAdmin) -> str:
    key = ctx.field("key")
    if not key:
        raise BadRequestError("Enter a property name.")
    value = ctx.raw_field("value").strip()
    check_secret(key, value)
    full = admin.set_global(ctx.field("scope", "GLOB"), key, value)
    return f"Property {full} saved. Click Reload to make it active."


def _remove_property(ctx: Ctx, admin: WorkerAdmin) -> str:
    key = ctx.field("key")
    if not admin.remove_global("GLOB", key):
        raise NotFoundError(f"There is no global property {key}.")
    return f"Property {key.upper()} removed. Click Reload to make it active."


def _reload(ctx: Ctx, admin: WorkerAdmin) -> str:
    generation = admin.reload("all")
    return f"Configuration reloaded (generation {generation})."


#: Form actions: ``action`` → handler (ctx, admin) → message.
ACTIONS: dict[str, Callable[[Ctx, WorkerAdmin], str]] = {
    "set_property": _set_property,
    "remove_property": _remove_property,
    "reload": _reload,
}


def globalconfig(web: AdminWeb, ctx: Ctx) -> Response:
    error = None
    status = 200
    if ctx.form is not None:
        try:
            return web.redirect(ctx, URL, form_action(ACTIONS, ctx)(ctx, web.admin(ctx)))
        except SignpeerError as exc:
            error, status = exc.message, error_status(exc)
    props = web.services.store.global_properties()
    loaded = web.services.runtime.global_properties
    rows = [{"key": k, "value": MASK if is_secret_key(k) else v, "pending": loaded.get(k) != v}
            for k, v in sorted(props.items())]
    removed = sorted(set(loaded) - set(props))
    edit = ctx.request.query_params.get("edit", "").upper()
    if edit not in props:
        edit = ""
    return web.render(ctx, "globalconfig.html", http_status=status, active="globalconfig", rows=rows,
                      removed=removed, error=error, edit=edit, edit_value=props.get(edit, ""), form=ctx.form)

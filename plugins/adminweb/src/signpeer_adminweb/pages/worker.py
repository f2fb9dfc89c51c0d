"""A worker's page: its properties, keys and status; property, key and certificate actions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import Response

from signpeer_adminweb.pages.workers import pending
from signpeer_adminweb.web import PREFIX, SECURITY_HEADERS, AdminWeb, Ctx, Refused, check_secret, form_action
from signpeer_core.api import MASK, BadRequestError, NotFoundError, SignpeerError, WorkerAdmin, format_dn, is_secret_key


def _worker_data(web: AdminWeb, ctx: Ctx, wid: int) -> dict[str, Any]:
    admin = web.admin(ctx)
    config = admin.worker_config(wid)
    props = [{"key": k, "value": MASK if is_secret_key(k) else v, "secret": is_secret_key(k)}
             for k, v in sorted(config.as_dict().items())]
    status = None
    keys: list[dict[str, Any]] = []
    key_error = None
    loaded = web.services.runtime.by_id.get(wid)
    if loaded is None:
        # Viewing never loads a worker (that would apply pending changes behind the admin's back).
        key_error = "This worker is not loaded yet: click Reload to load it and see its keys."
    else:
        status = loaded.status()
        try:
            for info in admin.key_infos(wid):
                keys.append({
                    "alias": info.alias, "description": info.description,
                    "certificate": format_dn(info.certificate.subject) if info.certificate is not None else "",
                    "default": info.alias == config.get_str("DEFAULTKEY"),
                    "next": info.alias == config.get_str("NEXTCERTSIGNKEY"),
                })
        except SignpeerError as exc:
            key_error = exc.message
    return {
        "wid": wid, "name": config.name, "props": props, "status": status, "keys": keys,
        "key_error": key_error, "can_activate": loaded is not None and key_error is not None,
        "pending": pending(web, wid, config.as_dict()),
        "defaultkey": config.get_str("DEFAULTKEY"), "nextkey": config.get_str("NEXTCERTSIGNKEY"),
        "keyalg": config.get_str("KEYALG", "RSA"), "keyspec": config.get_str("KEYSPEC", "2048"),
        "requestdn": config.get_str("REQUESTDN"),
    }


def _worker_id(web: AdminWeb, ctx: Ctx) -> int:
    try:
        return web.admin(ctx).worker_id(ctx.request.path_params["wid"])
    except SignpeerError as exc:
        raise Refused(404, "No such worker", exc.message) from None


def worker(web: AdminWeb, ctx: Ctx) -> Response:
    wid = _worker_id(web, ctx)
    url = f"{PREFIX}/workers/{wid}"
    error = None
    status = 200
    if ctx.form is not None:
        try:
            result = _worker_action(web, ctx, wid)
        except SignpeerError as exc:
            error, status = exc.message, (exc.status if 400 <= exc.status < 500 else 400)
            if exc.status >= 500:
                status = exc.status
        else:
            if isinstance(result, Response):
                return result
            return web.redirect(ctx, url, result)
    edit = ctx.request.query_params.get("edit", "").upper()
    data = _worker_data(web, ctx, wid)
    if edit and edit not in {p["key"] for p in data["props"]}:
        edit = ""
    return web.render(ctx, "worker.html", http_status=status, active="workers", error=error, edit=edit,
                      form=ctx.form, **data)


def _set_property(web: AdminWeb, ctx: Ctx, admin: WorkerAdmin, wid: int) -> str:
    key = ctx.field("key").upper()
    if not key:
        raise BadRequestError("Enter a property name.")
    value = ctx.raw_field("value").strip()
    check_secret(key, value)
    admin.update_worker(wid, {key: value})
    return f"Property {key} saved. Click Reload to make it active."


def _remove_property(web: AdminWeb, ctx: Ctx, admin: WorkerAdmin, wid: int) -> str:
    key = ctx.field("key").upper()
    if not admin.remove_property(wid, key):
        raise NotFoundError(f"The worker has no property {key}.")
    return f"Property {key} removed. Click Reload to make it active."


def _reload(web: AdminWeb, ctx: Ctx, admin: WorkerAdmin, wid: int) -> str:
    admin.reload(wid)
    return "Worker configuration reloaded."


def _activate_token(web: AdminWeb, ctx: Ctx, admin: WorkerAdmin, wid: int) -> str:
    admin.activate(wid, ctx.raw_field("authcode"))
    return "Crypto token activated (in this server process)."


def _generate_key(web: AdminWeb, ctx: Ctx, admin: WorkerAdmin, wid: int) -> str:
    alias = admin.generate_key(wid, ctx.field("alias") or None, ctx.field("keyalg") or None,
                               ctx.field("keyspec") or None)
    return f"Generated key '{alias}'."


def _test_key(web: AdminWeb, ctx: Ctx, admin: WorkerAdmin, wid: int) -> str:
    results = admin.test_key(wid, ctx.field("alias") or None)
    failed = [r for r in results if not r.success]
    if failed:
        raise BadRequestError("; ".join(r.line() for r in failed))
    return "; ".join(r.line() for r in results)


def _remove_key(web: AdminWeb, ctx: Ctx, admin: WorkerAdmin, wid: int) -> str:
    alias = ctx.field("alias")
    config = admin.worker_config(wid)
    if alias and alias in (config.get_str("DEFAULTKEY"), config.get_str("NEXTCERTSIGNKEY")) and \
            not ctx.checked("confirm"):
        raise BadRequestError(f"Key '{alias}' is the worker's DEFAULTKEY or NEXTCERTSIGNKEY; tick "
                              "'I am sure' to remove it anyway.")
    admin.remove_key(config, alias)
    return f"Removed key '{alias}'."


def _renew_key(web: AdminWeb, ctx: Ctx, admin: WorkerAdmin, wid: int) -> str:
    result = admin.next_key(wid, replace=ctx.checked("replace"))
    if not result.created:
        return (f"The next key '{result.alias}' was already generated (NEXTCERTSIGNKEY). Generate its CSR "
                "below, then install the certificate issued for it.")
    return (f"Generated the next key '{result.alias}' and set it as NEXTCERTSIGNKEY. Generate its CSR below, "
            "then install the certificate issued for it (the key then becomes DEFAULTKEY).")


def _generate_csr(web: AdminWeb, ctx: Ctx, admin: WorkerAdmin, wid: int) -> Response:
    which = ctx.field("key", "default")
    alias = ctx.field("alias") if which == "alias" else None
    if which == "alias" and not alias:
        raise BadRequestError("Enter the key alias to make the CSR for.")
    config = admin.worker_config(wid)
    result = admin.generate_csr(config, dn=ctx.field("dn") or None, sig_alg=ctx.field("sigalg") or None,
                                alias=alias, next_key=which == "next")
    filename = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{config.name}-{result.alias}") + ".csr"
    return Response(result.pem, media_type="application/pkcs10", headers={
        **SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'})


def _install_certificates(web: AdminWeb, ctx: Ctx, admin: WorkerAdmin, wid: int) -> str:
    data = ctx.extra.get("upload") or ctx.raw_field("chain").encode()
    if not data.strip():
        raise BadRequestError("Paste the certificate chain (PEM, leaf first) or choose a file.")
    result = admin.install_certificate_chain(wid, data, reload=True)
    promoted = f"; key '{result.alias}' is now DEFAULTKEY" if result.promoted else ""
    return (f"Installed {len(result.chain)} certificate(s) for key '{result.alias}'{promoted}. "
            "The worker was reloaded.")


#: Form actions: ``action`` → handler (web, ctx, admin, worker id) → message or response.
ACTIONS: dict[str, Callable[[AdminWeb, Ctx, WorkerAdmin, int], str | Response]] = {
    "set_property": _set_property,
    "remove_property": _remove_property,
    "reload": _reload,
    "activate": _activate_token,
    "generate_key": _generate_key,
    "test_key": _test_key,
    "remove_key": _remove_key,
    "renew_key": _renew_key,
    "generate_csr": _generate_csr,
    "install_certificates": _install_certificates,
}


def _worker_action(web: AdminWeb, ctx: Ctx, wid: int) -> str | Response:
    return form_action(ACTIONS, ctx)(web, ctx, web.admin(ctx), wid)

"""The Admin Web's pages, one module each, and the routes that serve them.

* :mod:`.overview` — workers by status, certificate expiry, RA queue, signing rate (the metrics' figures);
* :mod:`.workers` — the home redirect and the Workers list;
* :mod:`.worker` — one worker: properties, keys, CSR, certificates;
* :mod:`.globalconfig` — Global Configuration;
* :mod:`.auditlog` — the Audit Log;
* :mod:`.administrators` — Administrators (roles, "Allow any", incoming peers) and its Add page.

A page is a function ``(web, ctx) -> Response``; its form actions are a table in its module
(``ACTIONS``: ``action`` field → handler). :meth:`~signpeer_adminweb.web.AdminWeb.page` wraps it
with identification, the role check and CSRF.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from signpeer_adminweb.pages.administrators import administrators, administrators_add
from signpeer_adminweb.pages.auditlog import auditlog
from signpeer_adminweb.pages.globalconfig import globalconfig
from signpeer_adminweb.pages.overview import overview
from signpeer_adminweb.pages.worker import worker
from signpeer_adminweb.pages.workers import home, workers
from signpeer_adminweb.signinghistory import SigningHistory
from signpeer_adminweb.web import PREFIX, AdminWeb, Ctx

if TYPE_CHECKING:
    from signpeer_core.api import Services

#: URL (below PREFIX) → (role needed: any/view/audit, page, methods).
PAGES: dict[str, tuple[str, Callable[[AdminWeb, Ctx], Response], list[str]]] = {
    "/": ("any", home, ["GET"]),
    "/overview": ("view", overview, ["GET"]),
    "/workers": ("view", workers, ["GET", "POST"]),
    "/workers/{wid}": ("view", worker, ["GET", "POST"]),
    "/globalconfig": ("view", globalconfig, ["GET", "POST"]),
    "/auditlog": ("audit", auditlog, ["GET"]),
    "/administrators": ("view", administrators, ["GET", "POST"]),
    "/administrators/add": ("view", administrators_add, ["GET", "POST"]),
}


def routes(services: Services) -> list[BaseRoute]:
    web = AdminWeb(services)
    # The overview's signing rate of the last hour: a sample a minute from now on.
    services.state(SigningHistory, lambda: SigningHistory(services)).start()
    static_dir = Path(__file__).parent.parent / "static"
    out: list[BaseRoute] = [
        Route(PREFIX, lambda request: RedirectResponse(PREFIX + "/", status_code=308), methods=["GET"])]
    out += [Route(PREFIX + path, web.page(need, partial(page, web)), methods=methods)
            for path, (need, page, methods) in PAGES.items()]
    out.append(Mount(PREFIX + "/static", app=StaticFiles(directory=static_dir), name="adminweb-static"))
    return out


__all__ = ["PAGES", "routes"]

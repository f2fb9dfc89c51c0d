"""signpeer Admin Web: SignServer's administration pages, served by the signpeer server itself.

Server-rendered Jinja2 pages under ``/signserver/adminweb/`` (no JavaScript build, plain CSS),
mounted in the server's Starlette app through the ``signpeer_routes`` hook:

* :mod:`.access` — who is calling (TLS client certificate) and which roles the administrator
  rules (``WSADMINS``, ``WSAUDITORS``, ``WSARCHIVEAUDITORS``, ``ALLOWANYWSADMIN``) give them;
* :mod:`.csrf` — the cross-site request forgery defence of every form;
* :mod:`.web` — request handling shared by every page: identification, roles, CSRF, rendering;
* :mod:`.pages` — one module per page: Workers, a page per worker, Global Configuration,
  Administrators (with Peer Systems and Incoming Connections), Audit Log; each page's form
  actions are a table (``action`` → handler);
* :mod:`.plugin` — the hook implementations, nothing else.

Every change goes through :class:`signpeer_core.admin.WorkerAdmin` (rules included), so it is
audited with the administrator's certificate.
"""

__all__: list[str] = []

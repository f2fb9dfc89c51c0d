"""SignServer's generic HTTP interface: ``/signserver/process`` and ``/signserver/worker/{name}``,
and the form uploads it shares with the REST interface's multipart requests.

This is what SignServer's ``signclient`` (``-protocol HTTP``, its default) and many old
integrations call. A request names its worker with the form or query field ``workerName`` or
``workerId`` (or in the path, ``/signserver/worker/{name}``) and carries the data as:

* ``multipart/form-data``: the first file part is the data; form fields ``workerName``,
  ``workerId``, ``REQUEST_METADATA.<key>`` (one metadata entry) and ``REQUEST_METADATA``
  (several, in property-file syntax); ``encoding`` is refused, as SignServer does;
* ``application/x-www-form-urlencoded`` (or ``GET`` with a query): the field ``data``, base64
  when ``encoding=base64``;
* any other content type: the body itself is the data.

The answer is the worker's result as raw bytes (``application/octet-stream``); errors are the
server's usual ``{"error": ...}`` JSON with their status.

Cross-site requests: SignServer's servlet takes form posts from anywhere, and a browser sends a
form post across sites without asking. signpeer refuses a request whose ``Origin`` names another
site or whose ``Sec-Fetch-Site`` is ``cross-site``/``same-site``; clients that are not browsers
(signclient, curl, scripts) send neither header and are not affected.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from signpeer_core.app import REQUEST_ID_KEY
from signpeer_core.errors import AuthorizationError, BadRequestError, SignpeerError
from signpeer_core.formupload import FORM_MEDIA_TYPES, form_request, media_type, metadata_field
from signpeer_core.httpserver import basic_credentials, bearer_token
from signpeer_core.largebodies import octet_stream_response
from signpeer_core.pipeline import TransportRequest, new_request_id
from signpeer_core.rest import caller_of

if TYPE_CHECKING:
    from signpeer_core.services import Services

def refuse_cross_site(request: Request) -> None:
    """A browser's cross-site request (see the module docstring) is refused with 403."""
    fetch_site = request.headers.get("sec-fetch-site", "").lower()
    origin = request.headers.get("origin")
    if fetch_site in ("cross-site", "same-site"):
        raise AuthorizationError("cross-site requests are refused (Sec-Fetch-Site); call this endpoint from a "
                                 "client, not from a page of another site")
    if origin and origin != "null":
        scheme = request.url.scheme
        host = request.headers.get("host", "")
        if origin.rstrip("/").lower() != f"{scheme}://{host}".lower():
            raise AuthorizationError(f"cross-site requests are refused (Origin {origin}); call this endpoint from "
                                     "a client, not from a page of another site")


class GenericProcess:
    """The servlet's endpoints, bound to one process's services."""

    def __init__(self, services: Services) -> None:
        self.pipeline = services.pipeline

    async def process(self, request: Request) -> Response:
        started = time.perf_counter()
        request_id = new_request_id()
        request.scope[REQUEST_ID_KEY] = request_id
        caller = caller_of(request.scope)
        path_worker = request.path_params.get("workerName")
        worker: str | None = path_worker or request.query_params.get("workerName") or \
            request.query_params.get("workerId")
        try:
            refuse_cross_site(request)
            body_kind = request.method == "GET" or media_type(request) in FORM_MEDIA_TYPES
            if body_kind:
                data, metadata, form_worker = await form_request(request)
                worker = path_worker or form_worker or worker
            else:
                data, metadata = await request.body(), {}
                for name, value in request.query_params.items():
                    metadata_field(name, value, metadata)
            if not worker:
                raise BadRequestError("Missing worker name or ID: add workerName=<name> or workerId=<id> "
                                      "(form field or query parameter)")
        except SignpeerError as exc:
            self.pipeline.refused(request_id, worker or "?", caller, exc, started)
            raise
        username, password = basic_credentials(request)
        transport = TransportRequest(data, metadata, username, password, bearer_token(request))
        result = await self.pipeline.process(worker, transport, caller, request_id)
        return octet_stream_response(result.data)


def routes(services: Services) -> list[BaseRoute]:
    servlet = GenericProcess(services)
    return [
        Route("/signserver/process", servlet.process, methods=["GET", "POST"]),
        Route("/signserver/worker/{workerName}", servlet.process, methods=["GET", "POST"]),
    ]

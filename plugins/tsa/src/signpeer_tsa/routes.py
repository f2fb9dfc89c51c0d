"""The HTTP transport of time-stamp workers, at SignServer's path for them (RFC 3161 §3.4):

``POST /signserver/tsa?workerName=<name>`` (or ``?workerId=<id>``) with the DER ``TimeStampReq``
as the body (``Content-Type: application/timestamp-query``) answers ``200`` with the DER
``TimeStampResp`` (``application/timestamp-reply``), granted or rejected. Errors before a reply
exists (no such worker, not authorized, offline, empty body) are the server's usual error answers
(404, 401/403, 503, 400). The request goes through the pipeline like any signing request (its
authorization per ``AUTHTYPE``, its worker log line). Any worker may be named, as in SignServer:
a non-TSA signer answers with its own output.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from signpeer_core.api import (
    TIMESTAMP_REPLY_TYPE,
    BadRequestError,
    Caller,
    CertificateIdentity,
    TransportRequest,
    basic_credentials,
    client_certificate,
)

if TYPE_CHECKING:
    from signpeer_core.api import Services

PATH = "/signserver/tsa"


class TsaEndpoint:
    def __init__(self, services: Services) -> None:
        self.pipeline = services.pipeline

    async def post(self, request: Request) -> Response:
        started = time.perf_counter()
        cert = client_certificate(request.scope)
        client = request.client
        caller = Caller("TSA", CertificateIdentity.from_certificate(cert) if cert is not None else None,
                        client.host if client else None)
        worker = request.query_params.get("workerName") or request.query_params.get("workerId")
        if not worker:
            error = BadRequestError("name the time-stamp worker: /signserver/tsa?workerName=<name> (or ?workerId=<id>)")
            self.pipeline.refused("-", "-", caller, error, started)
            raise error

        async def parse() -> TransportRequest:
            body = await request.body()
            if not body:
                raise BadRequestError("Request must contain data: POST the DER TimeStampReq "
                                      "(Content-Type: application/timestamp-query)")
            username, password = basic_credentials(request)
            return TransportRequest(body, {}, username, password)

        result = await self.pipeline.process(worker, parse, caller)
        return Response(result.data, media_type=TIMESTAMP_REPLY_TYPE)


def routes(services: Services) -> list[BaseRoute]:
    endpoint = TsaEndpoint(services)
    return [Route(PATH, endpoint.post, methods=["POST"])]

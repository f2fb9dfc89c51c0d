"""Helpers for the server side of HTTP routes (core's and plugins'): reading a request.

:func:`json_body` reads a JSON-object body and refuses anything else with a
:class:`~signpeer_core.errors.BadRequestError` (400) saying what to send.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from signpeer_core.errors import BadRequestError


async def json_body(request: Request, empty: dict[str, Any] | None = None) -> dict[str, Any]:
    """The request's JSON object; 400 (:class:`BadRequestError`) for anything but a JSON object.

    An empty body gives ``empty`` when one is given (``{}`` for operations whose fields are all
    optional), else 400 "the request body is empty".
    """
    raw = await request.body()
    if not raw.strip():
        if empty is not None:
            return dict(empty)
        raise BadRequestError("the request body is empty; send a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    return body

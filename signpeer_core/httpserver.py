"""Helpers for the server side of HTTP routes (core's and plugins'): reading a request.

:func:`json_body` reads a JSON-object body and refuses anything else with a
:class:`~signpeer_core.errors.BadRequestError` (400) saying what to send;
:func:`basic_credentials` reads HTTP Basic credentials and :func:`bearer_token` an OAuth 2.0
bearer token (a route that signs passes them to the pipeline, which checks them per the worker's
``AUTHTYPE``).
"""

from __future__ import annotations

import base64
import binascii
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
    if not raw or raw.isspace():  # (no copy of the body: this runs on the signing path)
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


def basic_credentials(request: Request) -> tuple[str | None, str | None]:
    """(user name, password) from an ``Authorization: Basic`` header, or (None, None)."""
    header = request.headers.get("authorization")
    if not header:
        return None, None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        # Another scheme (a proxy's bearer token, say) is not ours to judge: workers that need no
        # user name ignore it, and USERNAME workers then ask for Basic credentials.
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise BadRequestError("the Authorization header is not valid base64 of user:password") from None
    user, sep, password = decoded.partition(":")
    return user, (password if sep else None)


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750), or None.

    Only the header is read (never a query parameter: URLs end up in logs). The token is
    returned as sent; the authorizer that reads it judges its form and size.
    """
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip()

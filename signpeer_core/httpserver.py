"""Helpers for the server side of HTTP routes (core's and plugins'): reading a request.

:func:`json_body` reads a JSON-object body and refuses anything else with a
:class:`~signpeer_core.errors.BadRequestError` (400) saying what to send;
:func:`read_body` reads the raw body (a client that hangs up mid-body is a
:class:`~signpeer_core.errors.ClientAbortError`, not an internal error); :func:`basic_credentials`
reads HTTP Basic credentials and :func:`bearer_token` an OAuth 2.0 bearer token (a route that
signs passes them to the pipeline, which checks them per the worker's ``AUTHTYPE``).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from starlette.requests import ClientDisconnect, Request

from signpeer_core.errors import BadRequestError, ClientAbortError


async def read_body(request: Request) -> bytes:
    """The request body; :class:`ClientAbortError` when the client hangs up before it is all in."""
    try:
        return await request.body()
    except ClientDisconnect:
        raise ClientAbortError("the connection closed before the whole request body came in (the client hung up, "
                               "or the server's body_timeout closed it)") from None


async def _read_body_once(request: Request) -> bytes:
    """The body, not kept on the request (as ``request.body()`` keeps it): a JSON body is
    parsed once and dropped, so a large base64 document is not held while it is signed."""
    if hasattr(request, "_body"):  # already read by someone else
        return await read_body(request)
    try:
        return b"".join([chunk async for chunk in request.stream()])
    except ClientDisconnect:
        raise ClientAbortError("the connection closed before the whole request body came in (the client hung up, "
                               "or the server's body_timeout closed it)") from None


async def json_body(request: Request, empty: dict[str, Any] | None = None) -> dict[str, Any]:
    """The request's JSON object; 400 (:class:`BadRequestError`) for anything but a JSON object.

    Total: invalid UTF-8, invalid JSON and JSON nested too deeply for the parser are 400s too.
    Strings may hold lone surrogates (``"\\ud800"`` is valid JSON); a route that stores or logs a
    field as text checks it (:func:`signpeer_core.identifiers.check_encodable`).

    An empty body gives ``empty`` when one is given (``{}`` for operations whose fields are all
    optional), else 400 "the request body is empty".
    """
    raw = await _read_body_once(request)
    if not raw or raw.isspace():  # (no copy of the body: this runs on the signing path)
        if empty is not None:
            return dict(empty)
        raise BadRequestError("the request body is empty; send a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:  # arrays or objects nested about a thousand deep: Python's parser gives up
        raise BadRequestError("the request body is nested too deeply; send a flat JSON object") from None
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

"""Helpers for the server side of HTTP routes (core's and plugins'): reading a request.

:func:`json_body` reads a JSON-object body and refuses anything else with a
:class:`~signpeer_core.errors.BadRequestError` (400) saying what to send;
:func:`read_body` reads the raw body (a client that hangs up mid-body is a
:class:`~signpeer_core.errors.ClientAbortError`, not an internal error); :func:`basic_credentials`
reads HTTP Basic credentials and :func:`bearer_token` an OAuth 2.0 bearer token (a route that
signs passes them to the pipeline, which checks them per the worker's ``AUTHTYPE``).

A route that is a plain ASGI app (the REST signing route, where a ``Request`` and a ``Response``
were a visible part of a request's cost) uses the same rules without a ``Request``:
:func:`receive_body`, :func:`json_object`, :func:`basic_credentials_of`, :func:`bearer_token_of`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive

from signpeer_core.errors import BadRequestError, ClientAbortError

_ABORTED = ("the connection closed before the whole request body came in (the client hung up, or the server's "
            "body_timeout closed it)")


async def read_body(request: Request) -> bytes:
    """The request body; :class:`ClientAbortError` when the client hangs up before it is all in."""
    try:
        return await request.body()
    except ClientDisconnect:
        raise ClientAbortError(_ABORTED) from None


async def receive_body(receive: Receive, first: Message | None = None) -> bytes | bytearray:
    """The request body from an ASGI ``receive`` (what :func:`read_body` does for a route that is a
    plain ASGI app, without a ``Request``); :class:`ClientAbortError` when the client hangs up.

    A body that comes in one message is returned as it came (bytes, no copy). One that comes in
    pieces (a large document: the server hands it over about 64 KiB at a time) is gathered into
    one ``bytearray`` as it arrives, which grows in place: joining a list of the pieces at the end
    held the document twice. ``first``: the first message, when the caller received it already.
    """
    gathered: bytearray | None = None
    while True:
        if first is None:
            message = await receive()
        else:  # the first message, received by the caller
            message, first = first, None
        if message["type"] == "http.request":
            body = message.get("body", b"")
            if not message.get("more_body", False):
                if gathered is None:
                    return body  # the usual case: the whole body in one message, no copy
                gathered += body
                return gathered
            if gathered is None:
                gathered = bytearray(body)
            else:
                gathered += body
        elif message["type"] == "http.disconnect":
            raise ClientAbortError(_ABORTED)


async def _read_body_once(request: Request) -> bytes:
    """The body, not kept on the request (as ``request.body()`` keeps it): a JSON body is
    parsed once and dropped, so a large base64 document is not held while it is signed."""
    if hasattr(request, "_body"):  # already read by someone else
        return await read_body(request)
    try:
        return b"".join([chunk async for chunk in request.stream()])
    except ClientDisconnect:
        raise ClientAbortError(_ABORTED) from None


async def json_body(request: Request, empty: dict[str, Any] | None = None) -> dict[str, Any]:
    """The request's JSON object; 400 (:class:`BadRequestError`) for anything but a JSON object.

    Total: invalid UTF-8, invalid JSON and JSON nested too deeply for the parser are 400s too.
    Strings may hold lone surrogates (``"\\ud800"`` is valid JSON); a route that stores or logs a
    field as text checks it (:func:`signpeer_core.identifiers.check_encodable`).

    An empty body gives ``empty`` when one is given (``{}`` for operations whose fields are all
    optional), else 400 "the request body is empty".
    """
    return json_object(await _read_body_once(request), empty)


def json_object(raw: bytes | bytearray, empty: dict[str, Any] | None = None, *, fast: bool = False) -> dict[str, Any]:
    """``raw`` as a JSON object, as :func:`json_body` reads a body.

    ``fast``: parse with orjson first (a few times faster than the standard library on a
    signing request's 1 KiB body), and keep its result only when it is an object of strings and
    objects of strings (what a signing request is), where the two parsers read the same.
    Anything else goes to the standard library's parser, so what is accepted and what each
    refusal says stay the same: what orjson refuses but the standard library takes (lone
    surrogates, ``NaN``, a UTF-8 byte order mark), numbers (orjson reads integers over 64 bits
    as floats) and nesting (each parser has its own depth limit).
    """
    if not raw or raw.isspace():  # (no copy of the body: this runs on the signing path)
        if empty is not None:
            return dict(empty)
        raise BadRequestError("the request body is empty; send a JSON object")
    body: Any = None
    if fast:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if body is not None and not _strings(body):
            body = None
    if body is None:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequestError(f"the request body is not valid JSON: {exc}") from None
        except RecursionError:  # arrays or objects nested about a thousand deep: Python's parser gives up
            raise BadRequestError("the request body is nested too deeply; send a flat JSON object") from None
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    return body


def _strings(body: Any) -> bool:
    """``body`` is an object of strings and objects of strings."""
    if type(body) is not dict:
        return False
    for value in body.values():
        if type(value) is not str and (type(value) is not dict or any(type(v) is not str for v in value.values())):
            return False
    return True


def basic_credentials(request: Request) -> tuple[str | None, str | None]:
    """(user name, password) from an ``Authorization: Basic`` header, or (None, None)."""
    return basic_credentials_of(request.headers.get("authorization"))


def basic_credentials_of(header: str | None) -> tuple[str | None, str | None]:
    """(user name, password) from the value of an ``Authorization`` header (or None), as
    :func:`basic_credentials` reads it."""
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
    return bearer_token_of(request.headers.get("authorization"))


def bearer_token_of(header: str | None) -> str | None:
    """The token in the value of an ``Authorization`` header (or None), as :func:`bearer_token` reads it."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip()

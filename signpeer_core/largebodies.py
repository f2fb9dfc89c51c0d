"""Large request and response bodies on the signing routes: a document read and answered
without holding it more often than needed (peak memory under 3× the document,
docs/performance.md "Large documents").

* :func:`base64_member` reads a large JSON body's base64 member from the body's bytes, without
  making a string of the base64 text first;
* :func:`octet_stream_response` answers a large raw result a piece at a time.

The body itself is gathered by :func:`signpeer_core.httpserver.receive_body` (one growing buffer).
"""

from __future__ import annotations

import binascii
import os
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response, StreamingResponse

from signpeer_core.errors import BadRequestError
from signpeer_core.httpserver import json_object

#: JSON bodies from this size up are read by :func:`base64_member`.
LARGE_BODY = 1024 * 1024
#: Results from this size up are sent a piece at a time, each piece :data:`PIECE` bytes (a
#: multiple of 3, so that base64 pieces join up).
STREAM_FROM = 1024 * 1024
PIECE = 3 * 256 * 1024


def base64_member(raw: bytes | bytearray, member: str, encoding: str) -> tuple[dict[str, Any], bytes] | None:
    """(the JSON object ``raw``, the decoded bytes of its ``member``) when that member is plain
    base64 text and the ``encoding`` member says BASE64; None for anything else, which the
    caller then parses as usual.

    Parsing the whole body made a string of the base64 text (4/3 of the document) beside the
    body (4/3 again) and the decoded document. Here the first ``member`` string's bytes are found
    in the body and stand there as a random token while the rest (small) is parsed by the usual
    parser (:func:`~signpeer_core.httpserver.json_object`). Only when the token comes back as the
    object's ``member`` (so the bytes found were that member's whole value and nothing else is),
    the value has no escapes and ``encoding`` is BASE64 is the value decoded where it lies
    (``binascii.a2b_base64``, strict). Anything else (escapes, another encoding, base64 with line
    breaks, invalid JSON, a duplicated member) gives None, so what the caller accepts and every
    refusal stay the same. The object returned holds the token as ``member``: the caller replaces it.
    """
    found = re.compile(rb'"' + re.escape(member.encode()) + rb'"[ \t\r\n]*:[ \t\r\n]*"').search(raw)
    if found is None:
        return None
    start = found.end()
    end = raw.find(b'"', start)
    if end < 0 or raw.find(b"\\", start, end) >= 0:
        return None
    token = os.urandom(16).hex()
    view = memoryview(raw)
    rest = b"".join((view[:start], token.encode(), view[end:]))
    try:
        data = json_object(rest, fast=True)
    except BadRequestError:
        return None  # the usual path says why
    kind = data.get(encoding)
    if data.get(member) != token or rest.count(token.encode()) != 1 or not isinstance(kind, str) \
            or kind.upper() != "BASE64":
        return None
    try:
        return data, binascii.a2b_base64(view[start:end], strict_mode=True)
    except (binascii.Error, ValueError):
        return None  # e.g. line breaks or spaces: the usual path reads them, or says what is wrong


def octet_stream_response(data: bytes) -> Response:
    """The raw result bytes (``application/octet-stream``); from :data:`STREAM_FROM` up sent a
    piece at a time, as the connection takes them (with its ``Content-Length``): handed over in
    one piece, the TLS layer encrypted the whole result at once and held copies of it until the
    client had read them."""
    if len(data) < STREAM_FROM:
        return Response(data, media_type="application/octet-stream")

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(data), PIECE):
            yield data[start:start + PIECE]

    return StreamingResponse(pieces(), media_type="application/octet-stream",
                             headers={"Content-Length": str(len(data))})

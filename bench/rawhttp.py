"""Reading an HTTP/1.1 response off a kept-alive connection, for the benchmarks' own clients.

The benchmarks' asyncio clients write a request and read its answer by hand (no HTTP library
between the client and the server, so the client costs as little as it can): the head up to the
blank line, then exactly ``Content-Length`` bytes of body.
"""

from __future__ import annotations

import asyncio


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The next response on ``reader``: (status code as 3 bytes, e.g. ``b"200"``, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return head[9:12], await reader.readexactly(length)

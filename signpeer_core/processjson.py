"""SignServer's ProcessRequest and ProcessResponse JSON, as the REST signing endpoint reads and
writes them (``POST /signserver/rest/v1/workers/{idOrName}/process``, :mod:`signpeer_core.rest`).

A request is ``{"data": "...", "encoding": "NONE" or "BASE64", "metaData": {...}}``; a large one's
base64 document is decoded where it lies in the body (:mod:`signpeer_core.largebodies`). A
response is ``{"archiveId", "data", "metaData", "requestId", "signerCertificate"}``, built by hand
on the hot path (every part but the metadata is base64 or a request id, which need no escaping),
and a large result is sent base64-encoded a piece at a time.
"""

from __future__ import annotations

import base64
import json
from binascii import b2a_base64
from collections.abc import AsyncIterator
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from starlette.responses import Response, StreamingResponse

from signpeer_core.errors import BadRequestError
from signpeer_core.formupload import decode_base64
from signpeer_core.httpserver import json_object
from signpeer_core.identifiers import check_encodable, check_identifier, shorten
from signpeer_core.largebodies import LARGE_BODY, PIECE, STREAM_FROM, base64_member
from signpeer_core.workers import SignResponse


class CertB64Cache:
    """Base64 DER of signer certificates, computed once per certificate object.

    Holds a reference to the certificate so ``id()`` is not reused while cached; one-time key
    workers bring a new certificate per request, so the cache is bounded.
    """

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self.items: dict[int, tuple[x509.Certificate, str]] = {}
        self.members: dict[int, tuple[x509.Certificate, bytes]] = {}

    def get(self, cert: x509.Certificate | None) -> str | None:
        if cert is None:
            return None
        hit = self.items.get(id(cert))
        if hit is not None and hit[0] is cert:
            return hit[1]
        value = base64.b64encode(cert.public_bytes(Encoding.DER)).decode()
        if len(self.items) >= self.limit:
            self.items.clear()
        self.items[id(cert)] = (cert, value)
        return value

    def member(self, cert: x509.Certificate) -> bytes:
        """``"signerCertificate":"<base64 DER>"`` as bytes (the response's last member)."""
        hit = self.members.get(id(cert))
        if hit is not None and hit[0] is cert:
            return hit[1]
        value = b'"signerCertificate":"%s"' % cast(str, self.get(cert)).encode()
        if len(self.members) >= self.limit:
            self.members.clear()
        self.members[id(cert)] = (cert, value)
        return value


cert_b64 = CertB64Cache()


def parse_process_request(data: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """SignServer's ProcessRequest JSON → (bytes to sign, metadata)."""
    if "data" not in data:
        raise BadRequestError('the request has no "data"; send {"data": "...", "encoding": "NONE" or "BASE64"}')
    raw = data["data"]
    if not isinstance(raw, str):
        raise BadRequestError('"data" must be a string (base64 with "encoding": "BASE64", else the text itself)')
    encoding = data.get("encoding") or "NONE"
    if not isinstance(encoding, str):
        raise BadRequestError('"encoding" must be "NONE" or "BASE64"')
    encoding = encoding.upper()
    if encoding == "BASE64":
        payload = decode_base64(raw)
    elif encoding == "NONE":
        try:
            payload = raw.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate such as "\ud800" is valid JSON, not text
            raise BadRequestError('"data" is not valid Unicode text; send the bytes base64-encoded '
                                  'with "encoding": "BASE64"') from None
    else:
        raise BadRequestError(f'unknown "encoding" {data["encoding"]!r}; use "NONE" or "BASE64"')
    meta = data.get("metaData")
    if meta is None:
        metadata: dict[str, str] = {}
    elif isinstance(meta, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        for k, v in meta.items():
            check_identifier(k, '"metaData" keys')
            check_encodable(v, f'"metaData" value of {shorten(k)!r}')
        metadata = meta
    else:
        raise BadRequestError('"metaData" must be an object with string values, e.g. {"key": "value"}')
    return payload, metadata


def json_scalar(value: str | None) -> str:
    """``json.dumps(value)`` for an id: printable ASCII without quote or backslash (every id
    signpeer makes) needs no escaping, so it is only quoted; anything else goes through json."""
    if value is not None and value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return json.dumps(value)


def process_request_of(raw: bytes | bytearray) -> tuple[bytes, dict[str, str]]:
    """(bytes to sign, metadata) of a ProcessRequest body; a large one's base64 document is
    decoded where it lies in the body (:func:`signpeer_core.largebodies.base64_member`)."""
    if len(raw) >= LARGE_BODY:
        found = base64_member(raw, "data", "encoding")
        if found is not None:
            data, payload = found
            return payload, parse_process_request(data | {"data": "", "encoding": "NONE"})[1]
    return parse_process_request(json_object(raw, fast=True))


def process_response_parts(result: SignResponse) -> tuple[bytes, bytes]:
    """SignServer's ProcessResponse JSON around its ``data``: (before, after). Built by hand on
    the hot path: every part but the metadata is base64 or a request id, which need no escaping."""
    cert = cert_b64.get(result.signer_certificate)
    meta = json.dumps(result.metadata, ensure_ascii=False, separators=(",", ":")) if result.metadata else "{}"
    return (f'{{"archiveId":{json_scalar(result.archive_id)},"data":"'.encode(),
            f'","metaData":{meta},"requestId":{json_scalar(result.request_id)},'
            f'"signerCertificate":{"null" if cert is None else chr(34) + cert + chr(34)}}}'.encode())


def process_response(result: SignResponse) -> bytes:
    """SignServer's ProcessResponse JSON (bytes joined once)."""
    before, after = process_response_parts(result)
    return b"".join((before, base64.b64encode(result.data), after))


def signature_response(signature: bytes, request_id: str, cert: x509.Certificate) -> bytes:
    """:func:`process_response` of a signer's bare signature without metadata, whose archive id
    is the request id (``PlainSigner``'s answer on the direct path, :mod:`signpeer_core.directsigning`):
    the same bytes, in one formatting."""
    quoted = json_scalar(request_id).encode()
    return b'{"archiveId":%s,"data":"%s","metaData":{},"requestId":%s,%s}' % (
        quoted, b2a_base64(signature, newline=False), quoted, cert_b64.member(cert))


#: Results from this size up are answered base64-encoded a piece at a time (a multiple of 3
#: bytes per piece), not as one more copy of the whole result.
STREAM_RESULTS_FROM = STREAM_FROM


def process_response_streamed(result: SignResponse) -> Response:
    before, after = process_response_parts(result)
    data = memoryview(result.data)
    length = len(before) + 4 * ((len(data) + 2) // 3) + len(after)

    async def pieces() -> AsyncIterator[bytes]:
        yield before
        for start in range(0, len(data), PIECE):
            yield base64.b64encode(data[start:start + PIECE])
        yield after

    return StreamingResponse(pieces(), media_type="application/json", headers={"Content-Length": str(length)})

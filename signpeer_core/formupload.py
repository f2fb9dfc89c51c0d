"""Reading what HTTP clients upload to sign: SignServer's forms (multipart and url-encoded, with
``REQUEST_METADATA`` fields) and base64 as SignServer's decoder reads it. Used by the REST
interface's multipart ``/process`` and by the generic interface (:mod:`signpeer_core.processservlet`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

import pybase64
from starlette.datastructures import UploadFile
from starlette.requests import Request

from signpeer_core.errors import BadRequestError, SignpeerError

METADATA_FIELD = "REQUEST_METADATA"
FORM_MEDIA_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def decode_base64(text: str | bytes, what: str = '"data"') -> bytes:
    """Base64 as SignServer's decoder reads it: whitespace and line breaks (what ``base64``
    prints) are skipped; anything else that is not base64 is a 400."""
    try:  # the alphabet and final padding only, SIMD-decoded (pybase64: the hot path of /process)
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:  # strict: only the alphabet and final padding (what pybase64 refuses gets binascii's reading)
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        pass
    try:  # the slower path only for input with line breaks or spaces
        compact = b"".join(text.split()) if isinstance(text, bytes) else "".join(text.split())
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError(f'{what} is not valid base64 (with "encoding": "BASE64"); '
                              'encode the bytes with base64, or send text with "encoding": "NONE"') from None


def metadata_field(name: str, value: str, metadata: dict[str, str]) -> None:
    if name == METADATA_FIELD:
        from signpeer_core.propertyfile import parse_properties

        for entry in parse_properties(value):
            metadata[entry.key] = entry.value
    elif name.startswith(METADATA_FIELD + "."):
        metadata[name[len(METADATA_FIELD) + 1:]] = value


async def form_request(request: Request) -> tuple[bytes, dict[str, str], str | None]:
    """(data, metadata, worker id or name from the form) of a multipart or url-encoded form, or
    of a GET query."""
    metadata: dict[str, str] = {}
    worker: str | None = None
    data: bytes | None = None
    if request.method == "GET":
        fields: Mapping[str, str | UploadFile] = request.query_params
        multipart = False
    else:
        multipart = media_type(request) == "multipart/form-data"
        try:
            fields = await request.form(max_files=1, max_fields=200)
        except SignpeerError:
            raise
        except Exception as exc:  # python-multipart's and Starlette's parse errors
            raise BadRequestError(f"the form upload cannot be read: {exc}") from None
    encoding = None
    for name, value in fields.multi_items() if hasattr(fields, "multi_items") else fields.items():
        if isinstance(value, UploadFile):
            if data is None:
                data = await value.read()
            continue
        if name in ("workerName", "workerId"):
            worker = value.strip()
        elif name == "encoding":
            encoding = value.strip()
        elif name == "data" and not multipart:
            data = value.encode("utf-8")
        else:
            metadata_field(name, value, metadata)
    if multipart:
        if data is None:
            raise BadRequestError("Missing file content in upload: send the data as a file part "
                                  "(curl -F 'file=@document.bin')")
        if encoding:
            raise BadRequestError("Encoded content not supported for multipart: leave out 'encoding'")
    else:
        if data is None:
            raise BadRequestError("Missing field 'data' in request")
        if encoding:
            if encoding.lower() != "base64":
                raise BadRequestError(f"Unknown encoding for the 'data' field: {encoding}")
            data = decode_base64(data, "the field 'data'")
    return data, metadata, worker

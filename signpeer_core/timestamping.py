"""Signature time-stamps (RFC 3161) for signers that make CMS: the seam between a signer and a TSA.

A time-stamp over a signature value proves that the signature existed while its certificate was
valid, so it verifies after the certificate expired (one-time certificates live minutes). A
signer configured with ``TSA_WORKER`` or ``TSA_URL`` gets a :class:`TimeStamper` from
:func:`timestamper_for` and, after signing, asks it for a token over the signature value; the
token goes into the CMS as the unsigned attribute ``id-aa-signatureTimeStampToken``
(:func:`signpeer_core.cms.add_signature_time_stamp`).

Two time-stampers, neither of which needs to know who implements the authority:

* :class:`WorkerTimeStamper`: a worker of this server that answers RFC 3161 requests (the tsa
  plugin's ``TimeStampSigner``), called in process through the :class:`~signpeer_core.pipeline.Pipeline`
  (its authorization, readiness checks and worker log line; no HTTP);
* :class:`UrlTimeStamper`: any RFC 3161 authority over HTTP(S) (``application/timestamp-query``,
  RFC 3161 §3.4), through :class:`~signpeer_core.httpclient.HttpClient`.

Both send a nonce and ``certReq``, and check the answer: status granted, the message imprint
and the nonce echoed. Any failure, and no answer within ``TSA_TIMEOUT``, is a
:class:`~signpeer_core.errors.TimeStampError` naming the authority; the signer fails the request
unless ``TSA_REQUIRED=false`` (then it logs a warning and returns the signature unstamped).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import urllib.parse
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from asn1crypto import algos, cms, core, tsp

from signpeer_core.errors import ConfigurationError, SignpeerError, TimeStampError

if TYPE_CHECKING:
    from signpeer_core.config import WorkerConfig
    from signpeer_core.httpclient import HttpClient
    from signpeer_core.services import Services

log = logging.getLogger("signpeer.timestamping")

#: RFC 3161 media types (§3.4).
QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"

#: ``TSA_DIGESTALGORITHM`` spellings → hashlib/asn1crypto names.
HASHES = {"SHA1": "sha1", "SHA224": "sha224", "SHA256": "sha256", "SHA384": "sha384", "SHA512": "sha512"}

DEFAULT_TIMEOUT = 10.0


class TimeStampResponse(core.Sequence):
    """RFC 3161 ``TimeStampResp``: asn1crypto's ``tsp.TimeStampResp`` makes the token mandatory,
    but a rejection carries none (``timeStampToken TimeStampToken OPTIONAL``)."""

    _fields = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


def hash_name(value: str) -> str:
    """``SHA256``, ``SHA-256`` or ``sha256`` → ``sha256``; a ConfigurationError for others."""
    key = value.strip().upper().replace("-", "")
    if key not in HASHES:
        raise ConfigurationError(f"unsupported digest algorithm {value!r}; use one of {', '.join(HASHES)}")
    return HASHES[key]


def build_request(hash_alg: str, digest: bytes, nonce: int | None = None, policy: str | None = None,
                  cert_req: bool = True) -> bytes:
    """A DER ``TimeStampReq`` for ``digest`` (made with ``hash_alg``, e.g. ``sha256``)."""
    req: dict[str, object] = {
        "version": "v1",
        "message_imprint": tsp.MessageImprint({"hash_algorithm": algos.DigestAlgorithm({"algorithm": hash_alg}),
                                               "hashed_message": digest}),
        "cert_req": cert_req,
    }
    if policy:
        req["req_policy"] = policy
    if nonce is not None:
        req["nonce"] = nonce
    return tsp.TimeStampReq(req).dump()


def token_from_response(response: bytes, hash_alg: str, digest: bytes, nonce: int | None, source: str) -> bytes:
    """The DER ``TimeStampToken`` of a granted ``TimeStampResp``, checked against the request
    (message imprint, nonce); a :class:`TimeStampError` naming ``source`` otherwise."""
    try:
        resp = TimeStampResponse.load(response)
        status = resp["status"]
        code = status["status"].native
        if code not in ("granted", "granted_with_mods"):
            text = "; ".join(status["status_string"].native or []) if status["status_string"].native else ""
            fail = status["fail_info"].native if status["fail_info"].native else set()
            detail = ", ".join(sorted(fail)) or "no failure info"
            raise TimeStampError(f"the time-stamp authority {source} refused the request: {code} ({detail})"
                                 + (f": {text}" if text else ""))
        token = resp["time_stamp_token"]
        info = token["content"]["encap_content_info"]["content"].parsed
        imprint = info["message_imprint"]
        if imprint["hash_algorithm"]["algorithm"].native != hash_alg or imprint["hashed_message"].native != digest:
            raise TimeStampError(f"the time-stamp from {source} is over another hash than the one sent")
        if nonce is not None and info["nonce"].native != nonce:
            raise TimeStampError(f"the time-stamp from {source} does not echo the request's nonce")
        return bytes(token.dump())
    except TimeStampError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise TimeStampError(f"the answer of the time-stamp authority {source} is not an RFC 3161 "
                             f"TimeStampResp: {exc}") from None


def token_time(token: bytes) -> str:
    """The ``genTime`` of a DER TimeStampToken, ISO 8601 (for logs and tests)."""
    info = cms.ContentInfo.load(token)["content"]["encap_content_info"]["content"].parsed
    return str(info["gen_time"].native.isoformat())


@dataclass(frozen=True)
class TimeStampOptions:
    """What a signer asks of its time-stamps (from its ``TSA_*`` properties)."""

    hash_alg: str = "sha256"
    policy: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    required: bool = True


class TimeStamper(ABC):
    """Gets RFC 3161 time-stamp tokens for a signer (see the module docstring)."""

    def __init__(self, options: TimeStampOptions) -> None:
        self.options = options

    @property
    @abstractmethod
    def source(self) -> str:
        """The authority, as error messages name it."""

    @abstractmethod
    async def _respond(self, request: bytes, request_id: str) -> bytes:
        """The authority's DER ``TimeStampResp`` to ``request``."""

    async def stamp(self, data: bytes, request_id: str) -> bytes:
        """A DER ``TimeStampToken`` over ``data`` (for a signature time-stamp: the signature
        value), or :class:`TimeStampError` within ``timeout``."""
        opts = self.options
        digest = hashlib.new(opts.hash_alg, data).digest()
        nonce = secrets.randbits(63)
        request = build_request(opts.hash_alg, digest, nonce, opts.policy)
        try:
            response = await asyncio.wait_for(self._respond(request, request_id), opts.timeout)
        except TimeoutError:
            raise TimeStampError(f"no time-stamp from {self.source} within {opts.timeout:g} s (TSA_TIMEOUT)") from None
        except TimeStampError:
            raise
        except SignpeerError as exc:
            raise TimeStampError(f"the time-stamp from {self.source} failed: {exc.message}") from None
        return token_from_response(response, opts.hash_alg, digest, nonce, self.source)


class WorkerTimeStamper(TimeStamper):
    """A worker of this server that answers RFC 3161 requests, called through the pipeline."""

    def __init__(self, services: Services, worker: str, options: TimeStampOptions) -> None:
        super().__init__(options)
        self.services = services
        self.worker = worker

    @property
    def source(self) -> str:
        return f"worker '{self.worker}' (TSA_WORKER)"

    async def _respond(self, request: bytes, request_id: str) -> bytes:
        from signpeer_core.pipeline import Caller, TransportRequest

        result = await self.services.pipeline.process(self.worker, TransportRequest(data=request),
                                                      Caller("INTERNAL"), request_id=f"{request_id}-tsa")
        return result.data


class _UrlClients:
    """HTTP clients of the URL time-stampers of a process, kept across reloads (one per URL and CA file)."""

    def __init__(self) -> None:
        self.clients: dict[tuple[str, str], HttpClient] = {}


class UrlTimeStamper(TimeStamper):
    """An RFC 3161 authority over HTTP(S): ``POST`` of the query, the reply in the body (RFC 3161 §3.4)."""

    def __init__(self, services: Services, url: str, options: TimeStampOptions, cafile: str = "",
                 username: str = "", password: str = "") -> None:
        super().__init__(options)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"TSA_URL must be an http(s) URL, not {url!r}")
        self.url = url
        self._base = f"{parts.scheme}://{parts.netloc}"
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._auth = (username, password) if username else None
        self._services = services
        self._cafile = cafile

    @property
    def source(self) -> str:
        return f"{self.url} (TSA_URL)"

    def _client(self) -> HttpClient:
        from signpeer_core.httpclient import HttpClient

        clients = self._services.state(_UrlClients).clients
        key = (self._base, self._cafile)
        client = clients.get(key)
        if client is None:
            client = clients[key] = HttpClient(self._base, cafile=self._cafile or None, timeout=self.options.timeout,
                                               ca_hint="TSA_CAFILE")
        return client

    def _post(self, request: bytes) -> bytes:
        response = self._client().request("POST", self._path, content=request, auth=self._auth,
                                          headers={"Content-Type": QUERY_TYPE}, timeout=self.options.timeout)
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != REPLY_TYPE:
            raise TimeStampError(f"{self.source} answered with {kind or 'no content type'}, not {REPLY_TYPE}")
        return response.content

    async def _respond(self, request: bytes, request_id: str) -> bytes:
        return await asyncio.to_thread(self._post, request)


def timestamper_for(config: WorkerConfig, services: Services) -> TimeStamper | None:
    """The time-stamper a signer's ``TSA_WORKER`` or ``TSA_URL`` asks for; None when neither is set.

    Raises :class:`ConfigurationError` for a bad value (the worker is then OFFLINE with it)."""
    worker, url = config.get_str("TSA_WORKER"), config.get_str("TSA_URL")
    if not worker and not url:
        return None
    if worker and url:
        raise ConfigurationError("set TSA_WORKER or TSA_URL, not both")
    timeout = config.get_float("TSA_TIMEOUT", DEFAULT_TIMEOUT)
    if not 0 < timeout <= 300:
        raise ConfigurationError(f"TSA_TIMEOUT must be between 0 and 300 seconds, got {timeout:g}")
    policy = config.get_str("TSA_POLICYOID") or None
    if policy:
        try:
            core.ObjectIdentifier(policy).dump()
        except ValueError:
            raise ConfigurationError(f"TSA_POLICYOID is not an object identifier: {policy!r}") from None
    options = TimeStampOptions(hash_alg=hash_name(config.get_str("TSA_DIGESTALGORITHM", "SHA256")),
                               policy=policy, timeout=timeout, required=config.get_bool("TSA_REQUIRED", True))
    if worker:
        if worker.lower() == config.name.lower():
            raise ConfigurationError("TSA_WORKER names the worker itself")
        return WorkerTimeStamper(services, worker, options)
    return UrlTimeStamper(services, url, options, cafile=config.get_str("TSA_CAFILE"),
                          username=config.get_str("TSA_USERNAME"), password=config.get_str("TSA_PASSWORD"))

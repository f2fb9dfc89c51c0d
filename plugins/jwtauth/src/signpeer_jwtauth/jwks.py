"""Verification keys of an authorization server: a fixed key, or a JWKS fetched over HTTPS.

A :class:`JwksSource` holds the keys of one JWKS URL for the whole server process (shared by
every worker that trusts it, and kept across reloads through :class:`JwksCache`, the plugin's
per-process state). It fetches:

* on first use (never when a worker loads: loading makes no network call);
* when the keys are older than the response's ``Cache-Control: max-age`` (bounded to
  :data:`MIN_TTL`..:data:`MAX_TTL`; :data:`DEFAULT_TTL` without one; ``no-cache``/``no-store``
  count as :data:`MIN_TTL`, never as "fetch on every request");
* once when a token names a ``kid`` the keys lack (the provider rotated its keys), at most once
  per ``JWKS_MIN_REFRESH_INTERVAL`` — a stream of tokens with made-up ``kid`` values cannot make
  the server fetch on every request.

One fetch at a time per source (the others wait for its result). A fetch has one deadline for
the whole exchange (``JWKS_TIMEOUT``: connect, TLS, answer), so a provider that accepts the
connection and never answers costs a request that long and no longer. When a fetch fails the
keys already held stay in use (a warning in the log) and the next attempt waits for the
refresh interval; with no keys at all the request is refused with 503 saying why, and later
requests within the interval get the same answer at once instead of waiting again.

Only asymmetric keys are taken from a JWKS (``kty`` RSA, EC, OKP with ``use`` ``sig`` or none):
a symmetric (``oct``) key in a JWKS would let whoever knows it mint tokens, and is skipped. A key
that states its ``alg`` verifies only that algorithm; otherwise the algorithms of its type
(RSA: RS*/PS*, EC: the ES* of its curve, Ed25519: EdDSA). Keys are never taken from a token
(``jku``, ``x5u``, ``jwk``, ``x5c`` headers are ignored).
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from signpeer_core.api import PublicKey, ServiceUnavailableError, SignpeerError, tls_context

log = logging.getLogger("signpeer.jwtauth")

MIN_TTL = 30.0
MAX_TTL = 86400.0
DEFAULT_TTL = 300.0
#: A JWKS larger than this is refused (a provider publishes a handful of keys, a few kB).
MAX_JWKS_BYTES = 1 << 20

RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
#: Every algorithm a token may use: asymmetric signatures only (never ``none``, never HMAC).
ACCEPTED_ALGORITHMS = frozenset((*RSA_ALGORITHMS, *_EC_ALGORITHMS.values(), "EdDSA"))


@dataclass(frozen=True)
class VerificationKey:
    """A public key and the algorithms it may verify."""

    key: PublicKey
    algorithms: tuple[str, ...]
    kid: str | None = None


def algorithms_for(key: PublicKey) -> tuple[str, ...]:
    """The token algorithms a key of this type can verify."""
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = _EC_ALGORITHMS.get(key.curve.name)
        return (alg,) if alg else ()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ("EdDSA",)
    return ()


class JwksError(Exception):
    """A fetch failed; the message says why (no secret in it)."""


def parse_jwks(data: bytes, url: str) -> dict[str | None, list[VerificationKey]]:
    """The usable signature keys of a JWKS document, by ``kid`` (None for keys without one)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise JwksError(f"the answer is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwksError('the answer is not a JWK set ({"keys": [...]})')
    keys: dict[str | None, list[VerificationKey]] = {}
    for jwk in doc["keys"]:
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) else None
        if jwk.get("kty") not in ("RSA", "EC", "OKP"):
            log.info("JWKS %s: key %r skipped: kty %r is not RSA, EC or OKP", url, kid, jwk.get("kty"))
            continue
        if jwk.get("use", "sig") != "sig" or ("key_ops" in jwk and "verify" not in (jwk.get("key_ops") or ())):
            continue
        try:
            key = jwt.PyJWK(jwk).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError) as exc:
            log.info("JWKS %s: key %r skipped: %s", url, kid, exc)
            continue
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
            continue
        algorithms = algorithms_for(key)
        stated = jwk.get("alg")
        if isinstance(stated, str):
            algorithms = tuple(a for a in algorithms if a == stated)
        if algorithms:
            keys.setdefault(kid, []).append(VerificationKey(key, algorithms, kid))
    return keys


_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?", re.I)


def cache_ttl(cache_control: str | None) -> float:
    """How long to keep a JWKS, from its ``Cache-Control`` (see the module docstring)."""
    if not cache_control:
        return DEFAULT_TTL
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return MIN_TTL
    m = _MAX_AGE.search(cache_control)
    if not m:
        return DEFAULT_TTL
    return min(MAX_TTL, max(MIN_TTL, float(m.group(1))))


@dataclass
class JwksSource:
    """The keys behind one JWKS URL, fetched and cached (see the module docstring)."""

    url: str
    cafile: Path | None = None
    timeout: float = 5.0
    min_refresh: float = 10.0
    clock: Callable[[], float] = time.monotonic
    keys: dict[str | None, list[VerificationKey]] = field(default_factory=dict)
    expires_at: float = 0.0
    fetched: bool = False
    #: Fetch attempts so far (for the tests and the log).
    attempts: int = 0
    _generation: int = 0
    _last_attempt: float = float("-inf")
    _last_kid_refresh: float = float("-inf")
    _last_error: str = ""
    _lock: anyio.Lock = field(default_factory=anyio.Lock)
    _context: ssl.SSLContext | None = None

    async def find(self, kid: str | None) -> list[VerificationKey]:
        """The keys for a token's ``kid`` (every key when the token names none); fetches as
        needed. :class:`ServiceUnavailableError` when no keys can be had at all."""
        now = self.clock()
        fetched_now = False
        if not self.fetched or now >= self.expires_at:
            seen = self._generation
            await self._refresh(seen)
            fetched_now = self._generation != seen
        found = self._lookup(kid)
        if not found and kid is not None and not fetched_now and now - self._last_kid_refresh >= self.min_refresh:
            # An unknown kid: the provider may have rotated its keys. Refresh once (and not again
            # for another unknown kid within the interval).
            self._last_kid_refresh = now
            await self._refresh(self._generation)
            found = self._lookup(kid)
        return found

    @property
    def generation(self) -> int:
        """Changes with every fetch attempt (a verified-token memory compares it)."""
        return self._generation

    def still_current(self, generation: int) -> bool:
        """True while the keys of ``generation`` are the ones held and not past their TTL."""
        return self._generation == generation and self.fetched and self.clock() < self.expires_at

    def _lookup(self, kid: str | None) -> list[VerificationKey]:
        if kid is None:
            return [k for keys in self.keys.values() for k in keys]
        return list(self.keys.get(kid, ()))

    async def _refresh(self, seen: int) -> None:
        async with self._lock:
            if self._generation != seen:
                return  # another request refreshed while this one waited
            now = self.clock()
            if now - self._last_attempt < self.min_refresh and self._last_error:
                if self.fetched:
                    return  # keep the keys we have until the next attempt is due
                raise self._unavailable(f"{self._last_error} (the last attempt {now - self._last_attempt:.0f} s ago; "
                                        f"next after JWKS_MIN_REFRESH_INTERVAL {self.min_refresh:g} s)")
            self._last_attempt = now
            self.attempts += 1
            try:
                keys, ttl = await self._fetch()
            except JwksError as exc:
                self._last_error = str(exc)
                self._generation += 1
                if self.fetched:
                    self.expires_at = now + self.min_refresh
                    log.warning("JWKS %s: refresh failed (%s); keeping the %d keys fetched before", self.url, exc,
                                sum(len(v) for v in self.keys.values()))
                    return
                raise self._unavailable(str(exc)) from None
            self._last_error = ""
            self.keys, self.fetched, self.expires_at = keys, True, now + ttl
            self._generation += 1
            log.info("JWKS %s: %d keys (kid %s), kept %g s", self.url, sum(len(v) for v in keys.values()),
                     ", ".join(sorted(str(k) for k in keys)) or "-", ttl)

    def _unavailable(self, why: str) -> ServiceUnavailableError:
        return ServiceUnavailableError(f"the token cannot be verified now: the keys of the authorization server "
                                       f"could not be fetched from {self.url}: {why}")

    def _ssl(self) -> ssl.SSLContext:
        if self._context is None:
            try:
                self._context = tls_context(self.cafile)
            except SignpeerError as exc:
                raise JwksError(exc.message) from None
        return self._context

    async def _fetch(self) -> tuple[dict[str | None, list[VerificationKey]], float]:
        body = bytearray()
        try:
            with anyio.fail_after(self.timeout):
                async with httpx.AsyncClient(verify=self._ssl(), timeout=self.timeout, follow_redirects=False) as client, \
                        client.stream("GET", self.url, headers={"Accept": "application/json"}) as response:
                    if response.status_code != 200:
                        raise JwksError(f"the server answered HTTP {response.status_code}")
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_JWKS_BYTES:
                            raise JwksError(f"the answer is larger than {MAX_JWKS_BYTES} bytes")
                    cache_control = response.headers.get("cache-control")
        except TimeoutError:
            raise JwksError(f"no answer within {self.timeout:g} s (JWKS_TIMEOUT)") from None
        except httpx.HTTPError as exc:
            raise JwksError(_describe(exc)) from None
        return parse_jwks(bytes(body), self.url), cache_ttl(cache_control)


def _describe(exc: httpx.HTTPError) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (f"the server's TLS certificate is not trusted ({cause.verify_message}); set "
                    "AUTHSERVER<n>.JWKS_CAFILE to the CA that issued it")
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (is the identity provider running?)"
        cause = cause.__cause__ or cause.__context__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class JwksCache:
    """The JWKS sources of this process (the plugin's per-process state), by URL and settings."""

    def __init__(self) -> None:
        self.sources: dict[tuple[Any, ...], JwksSource] = {}

    def source(self, url: str, cafile: Path | None, timeout: float, min_refresh: float) -> JwksSource:
        key = (url, str(cafile) if cafile else None, timeout, min_refresh)
        found = self.sources.get(key)
        if found is None:
            found = self.sources[key] = JwksSource(url, cafile, timeout, min_refresh)
        return found

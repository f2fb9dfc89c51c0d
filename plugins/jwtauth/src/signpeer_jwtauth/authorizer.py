"""``AUTHTYPE=JWT`` (SignServer's ``org.signserver.server.jwtauth.JwtAuthorizer``).

A signing request carries ``Authorization: Bearer <JWT>`` from a trusted identity provider. The
authorizer, per request:

1. refuses a missing token (401 with ``WWW-Authenticate: Bearer``), and an oversized or
   malformed one (400, ``error="invalid_request"``) before any cryptography;
2. reads the header and the ``iss`` claim (unverified) to pick the trusted server
   (``AUTHSERVER<n>``) — an unknown issuer is refused, so a token of a provider trusted only by
   another worker is worth nothing here;
3. checks the algorithm against the allow-list: asymmetric signatures only, and only those of the
   verifying key (never ``none``, never HMAC — a provider's public key used as an HMAC secret
   gets nowhere); the ``typ`` header (``JWT``, unless ``OPTIONAL_TYPE=true``);
4. verifies the signature with the server's key: ``PUBLICKEY``, or the JWKS key named by ``kid``
   (:mod:`.jwks`: cached, refreshed once on an unknown ``kid``) — with PyJWT;
5. checks ``exp`` (required), ``nbf`` and ``iat`` with ``MAX_ALLOWED_CLOCK_SKEW``, ``iss``, and
   the audience against ``ACCEPTED_AUDIENCES``;
6. matches the claims against the ``AUTHJWT<n>`` rules of that issuer: none matches → 403.

A token that passed every check is remembered (its SHA-256, never the token) with its claims
until it expires, as long as the JWKS it was verified with is the one held and not past its
``Cache-Control`` age: a client that sends the same token with many requests pays for the
signature verification once per server process. Only successes are remembered; the memory
lives in the authorizer, which a reload replaces.

Each refusal says why: in the answer and in the worker log line (``signpeer.worker``). The token
itself is never put in a message or a log. A valid token makes the request's identity: the user
name (the ``USERNAME_CLAIM`` claim, ``sub`` by default) and every claim
(:attr:`SignRequest.claims`), which one-time key workers put in certificates (``${JWT.email}``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import jwt

from signpeer_core.api import (
    AuthenticationError,
    AuthorizationError,
    BadRequestError,
    BearerAuthorizer,
    ConfigurationError,
    PropertyDoc,
    SignRequest,
    WorkerConfig,
    claim_text,
    claim_values,
    lookup_claim,
)
from signpeer_jwtauth.jwks import ACCEPTED_ALGORITHMS, JwksCache, JwksSource, VerificationKey, algorithms_for
from signpeer_jwtauth.servers import AuthServer, ClaimRule, parse_rules, parse_servers

if TYPE_CHECKING:
    from signpeer_core.api import Services

#: A longer bearer token is refused before it is decoded (real ones are 1-3 kB).
MAX_TOKEN_LENGTH = 16384
_COMPACT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_TYPES = {"jwt", "application/jwt", "at+jwt", "application/at+jwt"}
DEFAULT_SKEW = 60
#: Verified tokens remembered per worker (cleared when full).
_MEMORY_LIMIT = 4096
REALM = 'Bearer realm="signpeer"'


class MissingTokenError(AuthenticationError):
    """No bearer token: 401 with the challenge (RFC 6750 §3: no error code)."""

    headers = {"WWW-Authenticate": REALM}


class InvalidTokenError(AuthenticationError):
    """A token that fails verification: 401, ``error="invalid_token"``."""

    headers = {"WWW-Authenticate": f'{REALM}, error="invalid_token"'}


class MalformedTokenError(BadRequestError):
    """A token that is not a compact JWS, or too large: 400, ``error="invalid_request"``."""

    headers = {"WWW-Authenticate": f'{REALM}, error="invalid_request"'}


def _shown(value: Any) -> str:
    """A value from the token, for a message: quoted, and short (it is the caller's input)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _b64json(part: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise MalformedTokenError(f"the bearer token's {what} is not base64url-encoded JSON") from None
    if not isinstance(data, dict):
        raise MalformedTokenError(f"the bearer token's {what} is not a JSON object")
    return data


@dataclass(frozen=True, slots=True)
class _Verified:
    """A token that passed every check: what a request with it again needs, and until when."""

    username: str
    claims: dict[str, Any]
    valid_from: float
    valid_until: float
    sources: tuple[tuple[JwksSource, int], ...]


class JwtAuthorizer(BearerAuthorizer):
    """Bearer tokens (JWT) from trusted authorization servers; see the module docstring."""

    type_name = "JWT"
    authtype = "JWT"
    implementation_aliases = ("org.signserver.server.jwtauth.JwtAuthorizer",)
    properties: ClassVar[tuple[PropertyDoc, ...]] = (
        PropertyDoc("AUTHSERVER<n>.ISSUER", "—", "iss of a trusted authorization server's tokens"),
        PropertyDoc("AUTHSERVER<n>.PUBLICKEY", "—", "its public key (base64 DER SubjectPublicKeyInfo, or PEM)"),
        PropertyDoc("AUTHSERVER<n>.KEYALG", "RSA", "RSA, EC/ECDSA or Ed25519: the type of PUBLICKEY"),
        PropertyDoc("AUTHSERVER<n>.JWKS_URL", "—", "https:// URL of its JWK set (the provider's jwks_uri)"),
        PropertyDoc("AUTHSERVER<n>.JWKS_CAFILE", "system CAs", "PEM CA file trusted for the JWKS server"),
        PropertyDoc("AUTHJWT<n>.ISSUER", "—", "issuer whose tokens the rule matches"),
        PropertyDoc("AUTHJWT<n>.CLAIM.NAME", "—", "claim (dotted path for nested claims) the rule checks"),
        PropertyDoc("AUTHJWT<n>.CLAIM.VALUE", "—", "value the claim must have (or a list claim must hold)"),
        PropertyDoc("ACCEPTED_AUDIENCES", "—", "comma-separated audiences; when set a token's aud must name one"),
        PropertyDoc("OPTIONAL_TYPE", "false", "true accepts tokens without the typ=JWT header"),
        PropertyDoc("MAX_ALLOWED_CLOCK_SKEW", str(DEFAULT_SKEW), "seconds of clock skew allowed for exp/nbf/iat"),
        PropertyDoc("USERNAME_CLAIM", "sub", "claim that becomes the request's user name"),
        PropertyDoc("JWKS_TIMEOUT", "5", "seconds one JWKS fetch may take in all"),
        PropertyDoc("JWKS_MIN_REFRESH_INTERVAL", "10", "seconds between fetches forced by unknown kid values"),
    )

    def __init__(self, config: WorkerConfig, services: Services) -> None:
        self.worker = config.name
        self.servers = parse_servers(config, services.settings.path)
        self.rules = parse_rules(config, self.servers)
        self.audiences = frozenset(a.strip() for a in config.get_str("ACCEPTED_AUDIENCES").split(",") if a.strip())
        self.optional_type = config.get_bool("OPTIONAL_TYPE")
        # SignServer-derived products spell it MAX_ALLOWED_CLOCK_SCEW; both are read.
        skew_key = "MAX_ALLOWED_CLOCK_SKEW" if config.get_str("MAX_ALLOWED_CLOCK_SKEW") or \
            not config.get_str("MAX_ALLOWED_CLOCK_SCEW") else "MAX_ALLOWED_CLOCK_SCEW"
        self.skew = config.get_int(skew_key, DEFAULT_SKEW)
        if not 0 <= self.skew <= 3600:
            raise ConfigurationError(f"{skew_key} must be 0..3600 seconds")
        self.username_claim = config.get_str("USERNAME_CLAIM", "sub") or "sub"
        timeout = config.get_float("JWKS_TIMEOUT", 5.0)
        min_refresh = config.get_float("JWKS_MIN_REFRESH_INTERVAL", 10.0)
        if not 0 < timeout <= 60:
            raise ConfigurationError("JWKS_TIMEOUT must be more than 0 and at most 60 seconds")
        if not 0 <= min_refresh <= 3600:
            raise ConfigurationError("JWKS_MIN_REFRESH_INTERVAL must be 0..3600 seconds")
        cache = services.state(JwksCache)
        self._by_issuer: dict[str, list[tuple[AuthServer, JwksSource | None]]] = {}
        for server in self.servers:
            source = cache.source(server.jwks_url, server.jwks_cafile, timeout, min_refresh) \
                if server.jwks_url else None
            self._by_issuer.setdefault(server.issuer, []).append((server, source))
        self._rules_by_issuer: dict[str, list[ClaimRule]] = {}
        for rule in self.rules:
            self._rules_by_issuer.setdefault(rule.issuer, []).append(rule)
        self._verified: dict[bytes, _Verified] = {}

    # -- per request --------------------------------------------------------------------------
    async def check_token(self, request: SignRequest, token: str | None) -> None:
        if not token:
            raise MissingTokenError(
                f"worker '{self.worker}' requires a bearer token (AUTHTYPE=JWT): send Authorization: Bearer <token> "
                f"issued by a trusted identity provider")
        if len(token) > MAX_TOKEN_LENGTH:
            raise MalformedTokenError(f"the bearer token is {len(token)} characters long, more than the "
                                      f"{MAX_TOKEN_LENGTH} accepted")
        digest = hashlib.sha256(token.encode()).digest()
        known = self._verified.get(digest)
        if known is not None:
            now = time.time()
            if known.valid_from <= now < known.valid_until and all(s.still_current(g) for s, g in known.sources):
                request.username = known.username
                request.claims = dict(known.claims)
                return
            del self._verified[digest]
        if not _COMPACT.match(token):
            raise MalformedTokenError("the bearer token is not a JWT in compact form (three base64url parts "
                                      "separated by dots)")
        head, body, _ = token.split(".")
        header = _b64json(head, "header")
        payload = _b64json(body, "payload")
        issuer = payload.get("iss")
        if not isinstance(issuer, str) or not issuer:
            raise InvalidTokenError("the token has no iss (issuer) claim")
        trusted = self._by_issuer.get(issuer)
        if trusted is None:
            raise InvalidTokenError(f"the token's issuer {_shown(issuer)} is not trusted by worker '{self.worker}' "
                                    f"(no AUTHSERVER<n>.ISSUER names it)")
        alg = header.get("alg")
        if alg not in ACCEPTED_ALGORITHMS:
            raise InvalidTokenError(f"the token's algorithm {_shown(alg)} is not accepted: only asymmetric "
                                    f"signatures are ({', '.join(sorted(ACCEPTED_ALGORITHMS))}); never none or HMAC")
        typ = header.get("typ")
        if typ is None and not self.optional_type:
            raise InvalidTokenError("the token's header has no typ; send typ JWT, or set OPTIONAL_TYPE=true on the "
                                    "worker to accept tokens without it")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in _TYPES):
            raise InvalidTokenError(f"the token's typ {_shown(typ)} is not JWT (or at+jwt)")
        if "crit" in header:
            raise InvalidTokenError("the token has critical header parameters (crit), which are not supported")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidTokenError("the token's kid is not a string")
        sources = tuple(source for _, source in trusted if source is not None)
        claims = await self._verify(token, str(alg), kid, trusted)
        self._check_audience(claims)
        self._match_rules(issuer, claims)
        username = claim_text(lookup_claim(claims, self.username_claim))
        if not username:
            raise InvalidTokenError(f"the token has no {self.username_claim} claim to name the user (USERNAME_CLAIM)")
        request.username = username
        request.claims = claims
        self._remember(digest, username, claims, sources)

    def _remember(self, digest: bytes, username: str, claims: dict[str, Any], sources: tuple[JwksSource, ...]) -> None:
        exp = claims.get("exp")
        if not isinstance(exp, int | float):
            return
        starts = [v for v in (claims.get("nbf"), claims.get("iat")) if isinstance(v, int | float)]
        if len(self._verified) >= _MEMORY_LIMIT:
            self._verified.clear()
        # Valid while the keys it was verified with (the generation held now) stay current.
        self._verified[digest] = _Verified(username, dict(claims), max(starts, default=0) - self.skew,
                                           exp + self.skew, tuple((s, s.generation) for s in sources))

    async def _verify(self, token: str, alg: str, kid: str | None,
                      trusted: list[tuple[AuthServer, JwksSource | None]]) -> dict[str, Any]:
        candidates: list[tuple[AuthServer, VerificationKey]] = []
        searched = []
        for server, source in trusted:
            if server.public_key is not None:
                candidates.append((server, VerificationKey(server.public_key, algorithms_for(server.public_key))))
            if source is not None:
                candidates.extend((server, k) for k in await source.find(kid))
                searched.append(source.url)
        usable = [(s, k) for s, k in candidates if alg in k.algorithms]
        if not usable:
            if not candidates:
                where = f"in the JWKS at {', '.join(searched)}" if searched else "configured"
                raise InvalidTokenError(f"no key {_shown(kid)} of issuer {_shown(trusted[0][0].issuer)} {where} "
                                        f"(refreshed at most once per JWKS_MIN_REFRESH_INTERVAL)")
            raise InvalidTokenError(f"the token's algorithm {alg} does not fit the issuer's key "
                                    f"(it verifies {', '.join(sorted({a for _, k in candidates for a in k.algorithms}))})")
        failure: Exception | None = None
        for server, key in usable:
            try:
                return jwt.decode(token, key.key, algorithms=[alg], issuer=server.issuer, leeway=self.skew,
                                  options={"require": ["exp", "iss"], "verify_aud": False})
            except jwt.InvalidSignatureError as exc:
                failure = exc  # another key of the issuer may verify it
            except jwt.PyJWTError as exc:
                raise InvalidTokenError(self._why(exc)) from None
        raise InvalidTokenError(self._why(failure or jwt.InvalidSignatureError()))

    def _why(self, exc: Exception) -> str:
        if isinstance(exc, jwt.ExpiredSignatureError):
            return f"the token has expired (exp; MAX_ALLOWED_CLOCK_SKEW {self.skew} s)"
        if isinstance(exc, jwt.ImmatureSignatureError):
            return f"the token is not valid yet (nbf or iat in the future; MAX_ALLOWED_CLOCK_SKEW {self.skew} s)"
        if isinstance(exc, jwt.InvalidSignatureError):
            return "the token's signature does not verify with the issuer's key"
        if isinstance(exc, jwt.MissingRequiredClaimError):
            return f"the token has no {exc.claim} claim (required)"
        if isinstance(exc, jwt.InvalidIssuerError):
            return "the token's issuer does not match"
        if isinstance(exc, jwt.InvalidIssuedAtError):
            return "the token's iat is not a number"
        if isinstance(exc, jwt.DecodeError):
            return "the token cannot be decoded"
        return f"the token is not valid ({type(exc).__name__})"

    def _check_audience(self, claims: dict[str, Any]) -> None:
        if not self.audiences:
            return
        aud = claims.get("aud")
        given = [aud] if isinstance(aud, str) else [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []
        if not given:
            raise InvalidTokenError(f"the token has no aud (audience); worker '{self.worker}' accepts "
                                    f"{', '.join(sorted(self.audiences))} (ACCEPTED_AUDIENCES)")
        if not self.audiences.intersection(given):
            raise InvalidTokenError(f"the token is for audience {_shown(given if len(given) > 1 else given[0])}, not "
                                    f"one worker '{self.worker}' accepts ({', '.join(sorted(self.audiences))})")

    def _match_rules(self, issuer: str, claims: dict[str, Any]) -> None:
        rules = self._rules_by_issuer.get(issuer, [])
        for rule in rules:
            if rule.claim is None or rule.value in claim_values(lookup_claim(claims, rule.claim)):
                return
        wanted = "; ".join(f"AUTHJWT{r.index}: {r.claim}={r.value}" for r in rules) or "no AUTHJWT<n> rule"
        who = claim_text(lookup_claim(claims, self.username_claim)) or "?"
        raise AuthorizationError(f"the token of {_shown(who)} from {_shown(issuer)} is valid but matches no claim "
                                 f"rule of worker '{self.worker}' ({wanted})")


"""The JWT authorizer through the signing pipeline, in process: every acceptance and refusal.

Tokens come from a provider on loopback (conftest: joserfc mints them, its JWKS is served over
HTTPS with a certificate of the test PKI); signpeer verifies with PyJWT, fetching the JWKS over
real TLS. Each refusal is checked for its status, its ``WWW-Authenticate`` challenge and its
reason, and no log record may contain the token.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from signpeer_core.api import (
    AuthenticationError,
    AuthorizationError,
    BadRequestError,
    Caller,
    ServiceUnavailableError,
    SignpeerError,
    TransportRequest,
)
from signpeer_core.testing import add_signer

GOOD = {"groups": ["staff", "signers"], "aud": "signpeer", "email": "alice@example.com"}
INVALID = 'Bearer realm="signpeer", error="invalid_token"'


def call(services: Any, worker: str, token: str | None) -> Any:
    async def go() -> Any:
        return await services.pipeline.process(worker, TransportRequest(b"hello", bearer_token=token),
                                               Caller("TEST"))
    return asyncio.run(go())


def refused(services: Any, worker: str, token: str | None, cls: type[SignpeerError]) -> SignpeerError:
    with pytest.raises(cls) as info:
        call(services, worker, token)
    return info.value


@pytest.fixture(autouse=True)
def no_token_in_logs(caplog: pytest.LogCaptureFixture) -> Any:
    """Every test: whatever was logged (the worker log line included) holds no token."""
    caplog.set_level(logging.DEBUG)
    tokens: list[str] = []
    yield tokens
    text = "\n".join(r.getMessage() for r in caplog.records)
    for token in tokens:
        assert token not in text and token.split(".")[2] not in text


def test_a_valid_token_signs_and_names_the_user(services: Any, idp: Any, jwt_signer: Any,
                                                no_token_in_logs: list[str],
                                                caplog: pytest.LogCaptureFixture) -> None:
    worker = jwt_signer(idp)
    token = idp.token(GOOD)
    no_token_in_logs.append(token)
    result = call(services, worker, token)
    assert result.data
    line = [r.getMessage() for r in caplog.records if r.name == "signpeer.worker"][-1]
    assert "client='user:alice'" in line and "SUCCESS" in line
    # Cached: more requests fetch nothing more.
    for _ in range(5):
        call(services, worker, idp.token(GOOD))
    assert idp.fetches == 1


def test_the_claims_reach_the_worker(services: Any, idp: Any, jwt_signer: Any) -> None:
    worker = jwt_signer(idp, USERNAME_CLAIM="email")
    seen: list[Any] = []
    target = services.runtime.get(worker)
    original = target.process

    async def spy(request: Any) -> Any:
        seen.append((request.username, request.claims))
        return await original(request)

    target.process = spy
    call(services, worker, idp.token(GOOD, address={"country": "SE"}))
    username, claims = seen[0]
    assert username == "alice@example.com"
    assert claims["address"] == {"country": "SE"} and claims["sub"] == "alice" and claims["iss"] == idp.issuer


def test_missing_token_is_a_401_with_the_bearer_challenge(services: Any, idp: Any, jwt_signer: Any) -> None:
    worker = jwt_signer(idp)
    exc = refused(services, worker, None, AuthenticationError)
    assert exc.status == 401 and exc.headers == {"WWW-Authenticate": 'Bearer realm="signpeer"'}  # type: ignore[attr-defined]
    assert "requires a bearer token" in exc.message
    assert idp.fetches == 0  # nothing to verify, nothing fetched


@pytest.mark.parametrize("claims, reason", [
    ({"exp": -120}, "expired"),
    ({"nbf": 600}, "not valid yet"),
    ({"iat": 600}, "not valid yet"),
    ({"aud": "another-service"}, "audience 'another-service'"),
    ({"aud": None}, "no aud"),
    ({"exp": None}, "no exp claim"),
])
def test_time_and_audience_refusals(services: Any, idp: Any, jwt_signer: Any, no_token_in_logs: list[str],
                                    claims: dict[str, Any], reason: str) -> None:
    """Times are given relative to now (seconds), made absolute when the test runs."""
    worker = jwt_signer(idp)
    now = int(time.time())
    claims = {k: now + v if k in ("exp", "nbf", "iat") and isinstance(v, int) else v for k, v in claims.items()}
    token = idp.token({**GOOD, **claims})
    no_token_in_logs.append(token)
    exc = refused(services, worker, token, AuthenticationError)
    assert exc.status == 401 and exc.headers["WWW-Authenticate"] == INVALID  # type: ignore[attr-defined]
    assert reason in exc.message


def test_clock_skew_is_allowed(services: Any, idp: Any, jwt_signer: Any) -> None:
    worker = jwt_signer(idp, MAX_ALLOWED_CLOCK_SKEW="120")
    assert call(services, worker, idp.token({**GOOD, "exp": int(time.time()) - 60})).data
    strict = jwt_signer(idp, name="Strict", MAX_ALLOWED_CLOCK_SKEW="0")
    assert "expired" in refused(services, strict, idp.token({**GOOD, "exp": int(time.time()) - 5}),
                                AuthenticationError).message


def test_a_token_of_another_provider_is_refused_here_and_accepted_where_trusted(
        services: Any, make_idp: Any, jwt_signer: Any) -> None:
    first, second = make_idp(name="first"), make_idp(name="second")
    only_first = jwt_signer(first, name="OnlyFirst")
    only_second = jwt_signer(second, name="OnlySecond")
    token = second.token(GOOD)
    exc = refused(services, only_first, token, AuthenticationError)
    assert "not trusted by worker 'OnlyFirst'" in exc.message
    assert first.fetches == 0 and second.fetches == 0
    assert call(services, only_second, token).data
    # The second provider's key under the first provider's name: the key is not the first's.
    forged = second.token(GOOD, iss=first.issuer)
    exc = refused(services, only_first, forged, AuthenticationError)
    assert "no key 'second-1'" in exc.message and first.fetches == 1  # fetched just now: no second fetch


def test_unknown_kid_refreshes_once_then_refuses(services: Any, idp: Any, make_idp: Any, jwt_signer: Any) -> None:
    worker = jwt_signer(idp)
    call(services, worker, idp.token(GOOD))
    assert idp.fetches == 1
    stranger = make_idp(name="stranger")
    key = stranger.keys[0]
    exc = refused(services, worker, idp.token(GOOD, key=key, header={"kid": "unknown-1"}), AuthenticationError)
    assert exc.headers["WWW-Authenticate"] == INVALID and "no key 'unknown-1'" in exc.message  # type: ignore[attr-defined]
    assert idp.fetches == 2
    # Another made-up kid right after: no new fetch (JWKS_MIN_REFRESH_INTERVAL), refused again.
    refused(services, worker, idp.token(GOOD, key=key, header={"kid": "unknown-2"}), AuthenticationError)
    assert idp.fetches == 2


def test_rotated_keys_are_fetched_when_a_token_names_the_new_kid(services: Any, idp: Any, jwt_signer: Any) -> None:
    worker = jwt_signer(idp, JWKS_MIN_REFRESH_INTERVAL="0")
    call(services, worker, idp.token(GOOD))
    new_key = idp.rotate("idp-2")
    assert call(services, worker, idp.token(GOOD, key=new_key)).data
    assert idp.fetches == 2
    assert call(services, worker, idp.token(GOOD, key=new_key)).data
    assert idp.fetches == 2


def test_alg_none_and_hmac_with_the_public_key_are_refused(services: Any, idp: Any, jwt_signer: Any,
                                                           no_token_in_logs: list[str]) -> None:
    worker = jwt_signer(idp)
    claims = {**GOOD, "iss": idp.issuer, "sub": "mallory", "exp": int(time.time()) + 300}
    unsigned = idp.unsigned(claims, {"alg": "none", "typ": "JWT"})
    # An empty signature part is not even a compact JWS: 400 before anything else.
    assert refused(services, worker, unsigned, BadRequestError).status == 400
    exc = refused(services, worker, unsigned + "AA", AuthenticationError)
    assert "algorithm 'none' is not accepted" in exc.message
    confused = idp.hs256_with_public_key(claims)
    no_token_in_logs.append(confused)
    exc = refused(services, worker, confused, AuthenticationError)
    assert "algorithm 'HS256' is not accepted" in exc.message and exc.status == 401


def test_keys_named_by_the_token_are_never_used(services: Any, idp: Any, make_idp: Any, jwt_signer: Any) -> None:
    worker = jwt_signer(idp)
    attacker = make_idp(name="attacker")
    key = attacker.keys[0]
    via_jku = idp.token(GOOD, key=key, header={"jku": attacker.jwks_url})
    assert "no key 'attacker-1'" in refused(services, worker, via_jku, AuthenticationError).message
    via_jwk = idp.token(GOOD, key=key, header={"jwk": key.as_dict(private=False)})
    refused(services, worker, via_jwk, AuthenticationError)
    # With the provider's own kid but the attacker's key: the signature does not verify.
    forged = idp.token(GOOD, key=key, header={"kid": idp.keys[0].kid, "jku": attacker.jwks_url})
    assert "signature does not verify" in refused(services, worker, forged, AuthenticationError).message
    assert attacker.fetches == 0


def test_a_valid_token_matching_no_rule_is_a_403(services: Any, idp: Any, jwt_signer: Any) -> None:
    worker = jwt_signer(idp)
    exc = refused(services, worker, idp.token({**GOOD, "groups": ["staff"]}), AuthorizationError)
    assert exc.status == 403 and "matches no claim rule" in exc.message and "groups=signers" in exc.message
    # Nested claims (Keycloak's realm_access.roles) and booleans in rules.
    nested = jwt_signer(idp, name="Nested", **{"AUTHJWT1.CLAIM.NAME": "realm_access.roles",
                                               "AUTHJWT1.CLAIM.VALUE": "signer",
                                               "AUTHJWT2.ISSUER": idp.issuer,
                                               "AUTHJWT2.CLAIM.NAME": "email_verified",
                                               "AUTHJWT2.CLAIM.VALUE": "true"})
    assert call(services, nested, idp.token({**GOOD, "realm_access": {"roles": ["signer"]}})).data
    assert call(services, nested, idp.token({**GOOD, "email_verified": True})).data
    refused(services, nested, idp.token({**GOOD, "email_verified": False}), AuthorizationError)


@pytest.mark.parametrize("token, reason", [
    ("x" * 20000, "more than the 16384"),
    ("not-a-jwt", "not a JWT in compact form"),
    ("a.b.c.d", "not a JWT in compact form"),
    ("e30.e30.", "not a JWT in compact form"),
    ("!!!.e30.AA", "not a JWT in compact form"),
    ("AA.e30.AA", "header is not base64url-encoded JSON"),
    (base64.urlsafe_b64encode(b"[1]").decode().rstrip("=") + ".e30.AA", "header is not a JSON object"),
])
def test_huge_or_malformed_tokens_are_a_400(services: Any, idp: Any, jwt_signer: Any, token: str,
                                            reason: str) -> None:
    worker = jwt_signer(idp)
    exc = refused(services, worker, token, BadRequestError)
    assert exc.status == 400 and reason in exc.message
    assert exc.headers == {"WWW-Authenticate": 'Bearer realm="signpeer", error="invalid_request"'}  # type: ignore[attr-defined]


def test_the_typ_header(services: Any, idp: Any, jwt_signer: Any) -> None:
    worker = jwt_signer(idp)
    claims = {**GOOD, "iss": idp.issuer, "sub": "alice", "exp": int(time.time()) + 60}
    untyped = idp.compact({"alg": "RS256", "kid": idp.keys[0].kid}, claims)
    assert "no typ" in refused(services, worker, untyped, AuthenticationError).message
    wrong = idp.compact({"alg": "RS256", "kid": idp.keys[0].kid, "typ": "dpop+jwt"}, claims)
    assert "is not JWT" in refused(services, worker, wrong, AuthenticationError).message
    relaxed = jwt_signer(idp, name="Relaxed", OPTIONAL_TYPE="true")
    assert call(services, relaxed, untyped).data


def test_jwks_down_is_a_503_at_once(services: Any, idp: Any, jwt_signer: Any, down_url: str) -> None:
    down = down_url
    worker = jwt_signer(idp, **{"AUTHSERVER1.JWKS_URL": down})
    started = time.monotonic()
    exc = refused(services, worker, idp.token(GOOD), ServiceUnavailableError)
    assert exc.status == 503 and "connection refused" in exc.message and down in exc.message
    assert time.monotonic() - started < 5


def test_a_jwks_server_that_never_answers_costs_the_timeout_once(services: Any, idp: Any, jwt_signer: Any,
                                                                 silent_server: Any) -> None:
    url = f"https://localhost:{silent_server.port}/jwks"
    worker = jwt_signer(idp, JWKS_TIMEOUT="1", **{"AUTHSERVER1.JWKS_URL": url})
    started = time.monotonic()
    exc = refused(services, worker, idp.token(GOOD), ServiceUnavailableError)
    took = time.monotonic() - started
    assert "no answer within 1 s (JWKS_TIMEOUT)" in exc.message
    assert 0.9 <= took < 3
    # Within the refresh interval the next request is refused at once, not after another timeout.
    started = time.monotonic()
    exc = refused(services, worker, idp.token(GOOD), ServiceUnavailableError)
    assert time.monotonic() - started < 0.5 and "the last attempt" in exc.message


def test_untrusted_jwks_tls_certificate_is_a_503_naming_the_fix(services: Any, idp: Any, jwt_signer: Any) -> None:
    worker = jwt_signer(idp, **{"AUTHSERVER1.JWKS_CAFILE": ""})  # the system CAs do not know the test CA
    exc = refused(services, worker, idp.token(GOOD), ServiceUnavailableError)
    assert "JWKS_CAFILE" in exc.message and "not trusted" in exc.message


def test_a_fixed_public_key_and_ec_tokens(services: Any, pki: Any, make_idp: Any) -> None:
    ec_idp = make_idp(kind="EC", name="ec")
    der = ec_idp.keys[0].as_pem(private=False)
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    spki = load_pem_public_key(der).public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    props = {"AUTHTYPE": "JWT", "AUTHSERVER1.ISSUER": ec_idp.issuer,
             "AUTHSERVER1.PUBLICKEY": base64.b64encode(spki).decode(), "AUTHSERVER1.KEYALG": "ECDSA",
             "AUTHJWT1.ISSUER": ec_idp.issuer}
    add_signer(services, pki, "FixedKey", **props)
    assert call(services, "FixedKey", ec_idp.token({"sub": "bob"})).data
    assert ec_idp.fetches == 0
    # RS256 against an EC key: the algorithm does not fit the key.
    rsa_idp = make_idp(name="rsa")
    wrong = rsa_idp.token({"sub": "bob"}, iss=ec_idp.issuer)
    assert "does not fit the issuer's key" in refused(services, "FixedKey", wrong, AuthenticationError).message


@pytest.mark.parametrize("props, reason", [
    ({"AUTHSERVER1.ISSUER": None}, "AUTHSERVER1.ISSUER is not set"),
    ({"AUTHSERVER1.JWKS_URL": "http://localhost/jwks"}, "must be an https:// URL"),
    ({"AUTHSERVER1.JWKS_URLS": "x"}, "unknown property AUTHSERVER1.JWKS_URLS"),
    ({"AUTHJWT1.ISSUER": "https://elsewhere"}, "is not the ISSUER of any AUTHSERVER"),
    ({"AUTHJWT1.CLAIM.VALUE": None}, "needs AUTHJWT1.CLAIM.VALUE"),
    ({"AUTHSERVER1.PUBLICKEY": "bm90IGEga2V5", "AUTHSERVER1.JWKS_URL": None}, "is not a public key"),
    ({"AUTHSERVER1.JWKS_CAFILE": "missing.pem"}, "does not exist"),
    ({"JWKS_TIMEOUT": "0"}, "JWKS_TIMEOUT"),
])
def test_configuration_errors_make_the_signer_offline(services: Any, pki: Any, idp: Any, props_for: Any,
                                                      props: dict[str, Any], reason: str) -> None:
    merged = props_for(idp)
    for key, value in props.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    add_signer(services, pki, "Broken", **merged)
    status = services.runtime.get("Broken").status()
    assert not status.active and any(reason in r for r in status.reasons), status.reasons
    with pytest.raises(SignpeerError) as info:
        call(services, "Broken", idp.token(GOOD))
    assert info.value.status == 503


def test_unknown_authtype_names_the_plugin_types(services: Any, pki: Any) -> None:
    add_signer(services, pki, "Typo", AUTHTYPE="JWTT")
    reasons = services.runtime.get("Typo").status().reasons
    assert any("unknown AUTHTYPE 'JWTT'" in r and "JWT" in r for r in reasons), reasons


def test_jwks_document_checks(idp: Any) -> None:
    """Only asymmetric signature keys are taken from a JWKS (an HMAC key there is skipped)."""
    from signpeer_jwtauth.jwks import JwksError, parse_jwks

    rsa = idp.keys[0].as_dict(private=False)
    doc = {"keys": [rsa, {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
                    {**rsa, "kid": "enc", "use": "enc"}, "junk"]}
    keys = parse_jwks(json.dumps(doc).encode(), "test")
    assert list(keys) == [rsa["kid"]] and keys[rsa["kid"]][0].algorithms == ("RS256",)
    with pytest.raises(JwksError, match="not a JWK set"):
        parse_jwks(b'{"keys": 1}', "test")


def test_the_jwks_cache_follows_cache_control(idp: Any) -> None:
    """Kept for the answer's max-age (bounded), refetched after it; no-store is not "every time"."""
    from signpeer_jwtauth.jwks import MIN_TTL, JwksSource

    now = [1000.0]
    idp.cache_control = "public, max-age=120"
    source = JwksSource(idp.jwks_url, idp.pki.ca_pem, timeout=5, min_refresh=10, clock=lambda: now[0])

    async def find(kid: str | None) -> int:
        return len(await source.find(kid))

    kid = idp.keys[0].kid
    assert asyncio.run(find(kid)) == 1 and idp.fetches == 1
    now[0] += 119
    assert asyncio.run(find(kid)) == 1 and idp.fetches == 1
    idp.cache_control = "no-store"
    now[0] += 2
    assert asyncio.run(find(kid)) == 1 and idp.fetches == 2
    now[0] += MIN_TTL - 1
    assert asyncio.run(find(kid)) == 1 and idp.fetches == 2
    now[0] += 2
    assert asyncio.run(find(kid)) == 1 and idp.fetches == 3
    # The provider fails later: the keys held stay in use, one attempt per refresh interval.
    idp.close()
    now[0] += MIN_TTL + 1
    assert asyncio.run(find(kid)) == 1 and source.attempts == 4
    now[0] += 5
    assert asyncio.run(find(kid)) == 1 and source.attempts == 4
    now[0] += 6
    assert asyncio.run(find(kid)) == 1 and source.attempts == 5


def test_cache_ttl_parsing() -> None:
    from signpeer_jwtauth.jwks import DEFAULT_TTL, MAX_TTL, MIN_TTL, cache_ttl

    assert cache_ttl(None) == DEFAULT_TTL
    assert cache_ttl("public, max-age=600, must-revalidate") == 600
    assert cache_ttl("max-age=1") == MIN_TTL
    assert cache_ttl("max-age=99999999") == MAX_TTL
    assert cache_ttl("no-cache") == MIN_TTL
    assert cache_ttl("private") == DEFAULT_TTL


def test_a_verified_token_is_remembered_until_the_keys_change(services: Any, idp: Any, make_idp: Any,
                                                              jwt_signer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import jwt as pyjwt

    decodes: list[str] = []
    real = pyjwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        decodes.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(pyjwt, "decode", counting)
    worker = jwt_signer(idp, JWKS_MIN_REFRESH_INTERVAL="0")
    token = idp.token(GOOD)
    for _ in range(3):
        assert call(services, worker, token).data
    assert len(decodes) == 1
    # A refused token is never remembered.
    bad = idp.token({**GOOD, "groups": []})
    for _ in range(2):
        refused(services, worker, bad, AuthorizationError)
    assert len(decodes) == 3
    # The JWKS is fetched again (a token with an unknown kid): the remembered token is verified again.
    refused(services, worker, idp.token(GOOD, key=make_idp(name="other").keys[0]), AuthenticationError)
    assert call(services, worker, token).data
    assert len(decodes) == 4 and idp.fetches == 2  # the unknown kid never reached a verification

"""Fixtures of the JWT authorizer tests: a small OpenID provider (keys, a discovery document
and a JWKS over HTTPS), a server that never answers, and workers that use the authorizer.

Tokens are minted with joserfc — another JOSE library than the PyJWT that signpeer verifies
them with — and the JWKS is served by a real HTTPS server on loopback with a certificate from
the test PKI. The provider counts JWKS fetches, can rotate its keys, set the ``Cache-Control``
it answers with, and stop answering (``hang``) or stop listening (``stop``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from joserfc import jws, jwt
from joserfc.jwk import ECKey, RSAKey

from signpeer_core.testing import PKI, add_signer


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Provider:
    """An identity provider on ``https://localhost:<port>``; ``issuer`` is its base URL."""

    def __init__(self, pki: PKI, kind: str = "RSA", name: str = "idp") -> None:
        self.pki = pki
        self.kind = kind
        self.keys: list[Any] = [self._new_key(f"{name}-1")]
        self.cache_control: str | None = "max-age=300"
        self.fetches = 0
        self.hang = threading.Event()
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                if self.path == "/jwks":
                    with provider._lock:
                        provider.fetches += 1
                    if provider.hang.is_set():
                        provider.hang_released.wait(30)
                        return
                    body = json.dumps({"keys": [k.as_dict(private=False) for k in provider.keys]}).encode()
                elif self.path == "/.well-known/openid-configuration":
                    body = json.dumps({"issuer": provider.issuer, "jwks_uri": provider.jwks_url,
                                       "id_token_signing_alg_values_supported": [provider.alg]}).encode()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if provider.cache_control:
                    self.send_header("Cache-Control", provider.cache_control)
                self.end_headers()
                self.wfile.write(body)

        self.hang_released = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(pki.server.pem), str(pki.server.key_pem))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.issuer = f"https://localhost:{self.port}"
        self.jwks_url = f"{self.issuer}/jwks"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def alg(self) -> str:
        return "RS256" if self.kind == "RSA" else "ES256"

    def _new_key(self, kid: str) -> Any:
        if self.kind == "RSA":
            return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})
        return ECKey.generate_key("P-256", parameters={"kid": kid, "use": "sig", "alg": "ES256"})

    def rotate(self, kid: str) -> Any:
        """A new key (published next to the old ones)."""
        key = self._new_key(kid)
        self.keys.append(key)
        return key

    def token(self, claims: dict[str, Any] | None = None, key: Any = None, header: dict[str, Any] | None = None,
              lifetime: int = 300, **extra: Any) -> str:
        """A token signed with ``key`` (the newest key by default): iss, sub, iat, exp, then ``claims``."""
        key = key or self.keys[-1]
        now = int(time.time())
        body: dict[str, Any] = {"iss": self.issuer, "sub": "alice", "iat": now, "exp": now + lifetime}
        body.update(claims or {})
        body.update(extra)
        head = {"alg": self.alg, "kid": key.kid, "typ": "JWT"}
        head.update(header or {})
        return jwt.encode(head, {k: v for k, v in body.items() if v is not None}, key)

    def unsigned(self, claims: dict[str, Any], header: dict[str, Any]) -> str:
        """header.payload. with no signature (``alg: none``), made by hand: JOSE libraries refuse."""
        return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."

    def hs256_with_public_key(self, claims: dict[str, Any]) -> str:
        """The algorithm-confusion attack: HS256 keyed with the provider's public key (PEM)."""
        public_pem = self.keys[-1].as_pem(private=False)
        head = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": self.keys[-1].kid}).encode())
        body = b64url(json.dumps(claims).encode())
        mac = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{b64url(mac)}"

    def compact(self, header: dict[str, Any], claims: dict[str, Any], key: Any = None) -> str:
        """A JWS without joserfc's JWT defaults (e.g. no typ header)."""
        return jws.serialize_compact(header, json.dumps(claims).encode(), key or self.keys[-1])

    def close(self) -> None:
        self.hang_released.set()
        self.server.shutdown()
        self.server.server_close()


class SilentServer:
    """Accepts TCP connections and never answers (not even the TLS handshake)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.accepted:
            c.close()


def free_port() -> int:
    """A port nothing listens on (for a provider that is down)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def make_idp(pki: PKI) -> Iterator[Callable[..., Provider]]:
    """``make_idp(kind="RSA"|"EC", name=...)``: providers stopped after the test."""
    made: list[Provider] = []

    def make(kind: str = "RSA", name: str = "idp") -> Provider:
        made.append(Provider(pki, kind, name))
        return made[-1]

    yield make
    for p in made:
        p.close()


@pytest.fixture
def idp(make_idp: Callable[..., Provider]) -> Provider:
    return make_idp()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def jwt_props(provider: Provider, pki: PKI, **extra: str) -> dict[str, str]:
    """Signer properties trusting ``provider`` through its JWKS, with a rule on ``groups``."""
    props = {"AUTHTYPE": "org.signserver.server.jwtauth.JwtAuthorizer",
             "AUTHSERVER1.ISSUER": provider.issuer, "AUTHSERVER1.JWKS_URL": provider.jwks_url,
             "AUTHSERVER1.JWKS_CAFILE": str(pki.ca_pem),
             "AUTHJWT1.ISSUER": provider.issuer, "AUTHJWT1.CLAIM.NAME": "groups", "AUTHJWT1.CLAIM.VALUE": "signers",
             "ACCEPTED_AUDIENCES": "signpeer"}
    props.update(extra)
    return props


@pytest.fixture
def jwt_signer(services: Any, pki: PKI) -> Callable[..., str]:
    """``jwt_signer(provider, name="JwtSigner", **props)``: a PlainSigner with AUTHTYPE=JWT."""

    def make(provider: Provider, name: str = "JwtSigner", **props: str) -> str:
        add_signer(services, pki, name, **jwt_props(provider, pki, **props))
        return name

    return make


@pytest.fixture
def down_url() -> str:
    """An https URL on a loopback port nothing listens on (a provider that is down)."""
    return f"https://localhost:{free_port()}/jwks"


@pytest.fixture
def props_for(pki: PKI) -> Callable[..., dict[str, str]]:
    """``props_for(provider, **extra)``: :func:`jwt_props` as a fixture."""
    return lambda provider, **extra: jwt_props(provider, pki, **extra)

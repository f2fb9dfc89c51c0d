"""Cross-site request forgery defence for every Admin Web form.

Two independent checks on every POST:

1. **Origin.** Browsers send ``Origin`` on every form POST; it must name this server as
   configured (:mod:`.origins`: ``server_name``, else the names of the server's certificate),
   never as the request's ``Host`` header says. When a client sends no ``Origin`` the
   ``Referer`` is checked instead if present. A forged cross-site form fails here already.
2. **A token tied to session and certificate.** The first page view sets a random session
   cookie (``Secure``, ``HttpOnly``, ``SameSite=Strict``, path ``/signserver/adminweb``). Every
   form carries ``csrf_token = HMAC(server key, session id | SHA-256 of the client
   certificate)``. An attacker can neither read the cookie nor compute the HMAC, and a token
   is useless with another certificate.

The server key is the same in every server process of every node: it is derived from the data
protection key (``services.store.box.subkey("adminweb csrf")``), which all nodes of a cluster
share, so a form served by one node behind a load balancer is accepted by another.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SESSION_COOKIE = "signpeer_adminweb_session"
FIELD = "csrf_token"
COOKIE_PATH = "/signserver/adminweb"


class CsrfGuard:
    """Issues and checks the per-session, per-certificate form tokens."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    @staticmethod
    def new_session() -> str:
        return secrets.token_urlsafe(32)

    def token(self, session: str, cert_fingerprint: bytes) -> str:
        return hmac.new(self.key, session.encode() + b"|" + cert_fingerprint, hashlib.sha256).hexdigest()

    def valid(self, session: str | None, cert_fingerprint: bytes, token: str | None) -> bool:
        if not session or not token:
            return False
        return hmac.compare_digest(self.token(session, cert_fingerprint), token)

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

The server key is shared by all server processes of a data directory: it lives in
``<home>/run/adminweb-csrf.key`` (created once, mode 0600). If the data directory cannot be
written, a per-process random key is used, which still works for one process.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger("signpeer.adminweb")

SESSION_COOKIE = "signpeer_adminweb_session"
FIELD = "csrf_token"
COOKIE_PATH = "/signserver/adminweb"


def load_or_create_key(path: Path) -> bytes:
    """The shared HMAC key; the first process to start creates it (O_EXCL avoids a race)."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    key = secrets.token_bytes(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.hex())
        return key
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    except OSError as exc:
        log.warning("cannot store the Admin Web CSRF key in %s (%s); using a per-process key", path, exc)
        return key


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

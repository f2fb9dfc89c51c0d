"""Client authentication per worker (``AUTHTYPE``): NOAUTH, CLIENTCERT and USERNAME.

STUB: only NOAUTH so far; CLIENTCERT (authorized clients) and USERNAME (HTTP Basic with salted
hashes, ACCEPT_ALL_USERNAMES) are being added.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from signpeer_core.config import WorkerConfig
from signpeer_core.errors import ConfigurationError
from signpeer_core.workers import SignRequest


class Authorizer(ABC):
    """Decides whether a request may use a worker; raises Authentication/AuthorizationError."""

    @abstractmethod
    def authorize(self, request: SignRequest, password: str | None) -> None: ...


class NoAuthorizer(Authorizer):
    def authorize(self, request: SignRequest, password: str | None) -> None:
        return None


def build_authorizer(config: WorkerConfig) -> Authorizer:
    authtype = config.str("AUTHTYPE", "NOAUTH").upper()
    if authtype == "NOAUTH":
        return NoAuthorizer()
    raise ConfigurationError(f"unknown AUTHTYPE '{authtype}'; use NOAUTH, CLIENTCERT or USERNAME")

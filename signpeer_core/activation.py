"""Token activation shared by every process of a running server (``signpeer serve --workers N``).

An administrator activates a token through one server process (the REST admin API, the Admin
Web, or ``signpeer activatecryptotoken`` calling them). The other processes learn of it here:
the code is sealed with AES-GCM under a secret that ``serve`` draws at start-up and hands only
to its own processes (it is never written to disk), stored per node in the database, and
``activation_generation`` is bumped. Each process polls that counter and activates (or
deactivates) its own instance of the token. A server restart draws a new secret and forgets
every published code, as a restart of SignServer forgets manual activations.

Activation is not configuration: publishing it does not reload workers, so configuration
changes still wait for ``signpeer reload``.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from signpeer_core.services import Services
    from signpeer_core.workers import Worker

log = logging.getLogger("signpeer.activation")


class ActivationRelay:
    """Publishes activations of this process and applies those of the others."""

    def __init__(self, services: Services) -> None:
        self.services = services
        secret = services.settings.activation_secret
        self._aead = AESGCM(bytes.fromhex(secret)) if secret else None
        self.node = services.settings.node_id
        self.applied_generation = -1
        #: Held across a local (de)activation and its publication, and across apply(), so that
        #: apply() never acts on rows older than a change this process has just made. Take the
        #: runtime's lock first.
        self.lock = threading.RLock()

    @property
    def enabled(self) -> bool:
        """Only the processes of a running server share activations (not CLI processes)."""
        return self._aead is not None

    def _aad(self, worker_id: int) -> bytes:
        # Binds a sealed code to its token and node: a row copied elsewhere does not open.
        return f"{self.node}:{worker_id}".encode()

    def publish(self, owner: Worker, authentication_code: str | None) -> None:
        """Tell the other processes that ``owner``'s token was activated (code) or deactivated (None)."""
        if self._aead is None:
            return
        sealed = None
        if authentication_code is not None:
            nonce = os.urandom(12)
            sealed = nonce + self._aead.encrypt(nonce, authentication_code.encode(), self._aad(owner.id))
        generation = self.services.store.set_token_activation(owner.id, self.node, authentication_code is not None,
                                                              sealed)
        if generation == self.applied_generation + 1:
            self.applied_generation = generation  # this process already holds the new state

    def apply(self) -> None:
        """Bring this process's tokens in line with what was published; cheap when nothing changed.

        Called after every (re)load of the workers and by the poller when another process
        published. A row that fails (a passing HSM error) is tried again on the next call.
        """
        if self._aead is None:
            return
        store, runtime = self.services.store, self.services.runtime
        with runtime.lock, self.lock:
            generation = store.activation_generation()
            rows = store.token_activations(self.node)
            complete = True
            for worker_id, (active, sealed) in rows.items():
                token = runtime.own_token(worker_id)
                if token is None or token.is_active == active:
                    continue
                try:
                    if active and sealed is not None:
                        code = self._aead.decrypt(sealed[:12], sealed[12:], self._aad(worker_id)).decode()
                        token.activate(code)
                        log.info("crypto token of worker %s activated (published by another process)", worker_id)
                    elif not active:
                        token.deactivate()
                        log.info("crypto token of worker %s deactivated (published by another process)", worker_id)
                except InvalidTag:
                    log.warning("activation of worker %s was sealed by an earlier server run; ignored", worker_id)
                except Exception as exc:  # one token's failure must not keep the others from following
                    complete = False
                    log.warning("applying the published activation of worker %s failed: %s", worker_id, exc)
                runtime.refresh_token_users(worker_id)
            if complete:
                self.applied_generation = generation

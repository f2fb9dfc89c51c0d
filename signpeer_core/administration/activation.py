"""Making things active: stored configuration (``reload``) and crypto tokens (activate, deactivate).

``reload`` publishes an empty change: its RELOAD_WORKER_CONFIG record and the generation bump are
one transaction; every server process reloads within its poll interval and this one at once.
Token activation is relayed to the other processes of a running server by
:mod:`signpeer_core.activation`.
"""

from __future__ import annotations

import logging

from signpeer_core.administration.base import AdminBase, WorkerRef
from signpeer_core.administration.publishing import Change, publish
from signpeer_core.audit import KEY_MANAGEMENT
from signpeer_core.errors import SignpeerError
from signpeer_core.workers import Worker

log = logging.getLogger("signpeer.admin")

#: CESeCore's event names for a crypto token's activation and deactivation.
ACTIVATION = "CRYPTOTOKEN_ACTIVATION"
DEACTIVATION = "CRYPTOTOKEN_DEACTIVATION"


class Activation(AdminBase):
    """The activation operations of :class:`~signpeer_core.admin.WorkerAdmin`."""

    def reload(self, id_or_name: WorkerRef = "all") -> int:
        """Make stored changes active in every process of the node; returns the new generation.

        Naming a worker records it in the audit log and in the published generation's scope, so
        every server process rebuilds just that worker (others keep their activated tokens), here
        too; its cost does not grow with the number of workers. ``all`` rebuilds every worker.
        """
        wid = None if str(id_or_name).lower() == "all" else self.resolve(id_or_name).worker_id
        generation = publish(self.services, Change().record(self.reload_event(wid)),
                             None if wid is None else [wid])
        runtime = self.services.runtime
        if not runtime.complete:  # a process that had not loaded its workers (a CLI command)
            if wid is None:
                runtime.load()
            else:
                runtime.reload_workers([wid])  # that worker (and its crypto worker), not every worker
        return generation

    def activate(self, id_or_name: WorkerRef, authentication_code: str) -> None:
        """Activate the token in this process and, in a running server, in its other processes.
        Audited (CRYPTOTOKEN_ACTIVATION), a failure (wrong PIN) too."""
        worker, token = self.token(id_or_name, active=False)
        relay = self.services.activation
        try:
            with self.services.runtime.lock, relay.lock:
                token.activate(authentication_code)
                owner = self._owner(worker)
                self.services.runtime.refresh_token_users(owner.id)
                relay.publish(owner, authentication_code)
        except SignpeerError as exc:
            self._audit_token(ACTIVATION, worker, exc)
            raise
        self._audit_token(ACTIVATION, worker)

    def deactivate(self, id_or_name: WorkerRef) -> None:
        """Deactivate the token here and in the server's other processes (CRYPTOTOKEN_DEACTIVATION)."""
        worker, token = self.token(id_or_name, active=False)
        relay = self.services.activation
        try:
            with self.services.runtime.lock, relay.lock:
                # Published first: a database that cannot be written refuses the deactivation
                # before anything changed (the token keeps signing, the caller gets the 503).
                relay.publish(self._owner(worker), None)
                token.deactivate()
        except SignpeerError as exc:
            self._audit_token(DEACTIVATION, worker, exc)
            raise
        self._audit_token(DEACTIVATION, worker)

    def _audit_token(self, event: str, worker: Worker, error: SignpeerError | None = None) -> None:
        details = {"CRYPTOTOKEN": self.token_name(worker)}
        if error is not None:
            details["ERROR"] = error.message
        record = self.event(event, KEY_MANAGEMENT, worker.id, details,
                            outcome="FAILURE" if error is not None else "SUCCESS")
        try:
            self.store.audit(record)
        except Exception as exc:  # the token changed state; an unwritable database must not hide that
            log.error("cannot write the audit record %s of worker %s: %s", event, worker.name, exc)

    def _owner(self, worker: Worker) -> Worker:
        """The worker that holds ``worker``'s token (itself, or the one its CRYPTOTOKEN names)."""
        return self.services.runtime.get(self.token_name(worker))

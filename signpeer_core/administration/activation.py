"""Making things active: stored configuration (``reload``) and crypto tokens (activate, deactivate).

``reload`` publishes an empty change: its RELOAD_WORKER_CONFIG record and the generation bump are
one transaction; every server process reloads within its poll interval and this one at once.
Token activation is relayed to the other processes of a running server by
:mod:`signpeer_core.activation`.
"""

from __future__ import annotations

from signpeer_core.administration.base import AdminBase, WorkerRef
from signpeer_core.administration.publishing import Change, publish
from signpeer_core.workers import Worker


class Activation(AdminBase):
    """The activation operations of :class:`~signpeer_core.admin.WorkerAdmin`."""

    def reload(self, id_or_name: WorkerRef = "all") -> int:
        """Make stored changes active in every process of the node; returns the new generation.

        The generation is global (every server process reloads all workers when it changes);
        naming a worker only checks that it exists, records it in the audit log and rebuilds just
        that worker in this process (others keep their activated tokens).
        """
        wid = None if str(id_or_name).lower() == "all" else self.resolve(id_or_name).worker_id
        generation = publish(self.services, Change().record(self.reload_event(wid)),
                             None if wid is None else [wid])
        runtime = self.services.runtime
        if runtime.generation < 0:
            runtime.load()  # an explicit reload also loads a process that had not loaded its workers
        return generation

    def activate(self, id_or_name: WorkerRef, authentication_code: str) -> None:
        """Activate the token in this process and, in a running server, in its other processes."""
        worker, token = self.token(id_or_name, active=False)
        relay = self.services.activation
        with self.services.runtime.lock, relay.lock:
            token.activate(authentication_code)
            owner = self._owner(worker)
            self.services.runtime.refresh_token_users(owner.id)
            relay.publish(owner, authentication_code)

    def deactivate(self, id_or_name: WorkerRef) -> None:
        worker, token = self.token(id_or_name, active=False)
        relay = self.services.activation
        with self.services.runtime.lock, relay.lock:
            token.deactivate()
            relay.publish(self._owner(worker), None)

    def _owner(self, worker: Worker) -> Worker:
        """The worker that holds ``worker``'s token (itself, or the one its CRYPTOTOKEN names)."""
        return self.services.runtime.get(self.token_name(worker))

"""What every administration operation starts from: who acts, and the worker it acts on.

An operation resolves its worker ONCE (:meth:`AdminBase.resolve`: one store read for an id, one
for a name) and passes the resulting :class:`~signpeer_core.config.WorkerConfig` on; the
runtime's worker and its crypto token come from memory (:meth:`AdminBase.worker_token`).
Worker configuration is read from the **store** (the source of truth, which may be ahead of the
loaded runtime until ``reload``); keys are reached through the **runtime**'s crypto tokens (a
worker's own token, or the one of the crypto worker its ``CRYPTOTOKEN`` names).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from signpeer_core.audit import WORKER_CONFIG, Admin, AuditEvent
from signpeer_core.config import WorkerConfig
from signpeer_core.errors import ConfigurationError, CryptoTokenOfflineError, UnknownWorkerError
from signpeer_core.identifiers import shorten, worker_id_of
from signpeer_core.workers import WorkerStatus

if TYPE_CHECKING:
    from signpeer_core.services import Services
    from signpeer_core.tokens import CryptoToken
    from signpeer_core.workers import Worker

#: A worker as the administration methods accept it: id, NAME, or an already resolved config.
WorkerRef = str | int | WorkerConfig


def unknown_worker(key: str) -> UnknownWorkerError:
    return UnknownWorkerError(f"no worker '{shorten(key)}'; list them with signpeer getstatus brief all")


class AdminBase:
    """The services and the acting administrator; worker resolution shared by every concept."""

    def __init__(self, services: Services, admin: Admin) -> None:
        self.services = services
        self.store = services.store
        self.admin = admin

    # -- resolution -------------------------------------------------------------------------
    def resolve(self, ref: WorkerRef) -> WorkerConfig:
        """The stored configuration of an existing worker given by id, (case-insensitive) NAME or config."""
        if isinstance(ref, WorkerConfig):
            return ref
        key = str(ref).strip()
        # An id needs one worker's rows, not every worker's (peer renewals run per worker by id).
        wid = worker_id_of(key)
        if wid is not None:
            props = self.store.worker_properties(wid)
            if props:
                return WorkerConfig(wid, props)
        if key:  # a name: one indexed read of the NAME rows, then that worker's rows
            found = self.store.worker_id_by_name(key)
            if found is not None:
                props = self.store.worker_properties(found)
                if props:
                    return WorkerConfig(found, props)
        raise unknown_worker(key)

    def worker_id(self, id_or_name: WorkerRef) -> int:
        """The id of an existing worker given by id or (case-insensitive) NAME."""
        return self.resolve(id_or_name).worker_id

    def find_worker_id(self, id_or_name: WorkerRef) -> int | None:
        try:
            return self.worker_id(id_or_name)
        except UnknownWorkerError:
            return None

    def worker_config(self, id_or_name: WorkerRef) -> WorkerConfig:
        """The stored (not necessarily reloaded) configuration of a worker."""
        return self.resolve(id_or_name)

    def global_config(self) -> dict[str, str]:
        return self.store.global_properties()

    def worker_ids(self) -> list[int]:
        return self.store.worker_ids()

    def event(self, event: str, module: str, worker_id: int | None, details: dict[str, str],
              outcome: str = "SUCCESS") -> AuditEvent:
        """An audit record of this administrator."""
        return AuditEvent(event, module, self.admin, worker_id, details, outcome=outcome)

    def reload_event(self, worker_id: int | None) -> AuditEvent:
        """RELOAD_WORKER_CONFIG: the change (or the stored configuration) was made active."""
        return self.event("RELOAD_WORKER_CONFIG", WORKER_CONFIG, worker_id, {})

    # -- the runtime ------------------------------------------------------------------------
    def catch_up(self) -> bool:
        """Rebuild what another process of this server published and this one has not loaded yet
        (what the reload poller does a moment later); True when it rebuilt something.

        For an operation that continues what a call to another process began: with ``serve
        --workers N`` a client's next request may reach a process that has not yet picked up the
        key or property the previous request made. One read of the configuration generation when
        nothing is behind.
        """
        from signpeer_core.administration.publishing import reload_if_behind

        if self.services.runtime.generation < 0:  # nothing loaded in this process: nothing to catch up
            return False
        return reload_if_behind(self.services)

    def loaded_worker(self, id_or_name: WorkerRef) -> Worker:
        """The runtime worker (for tokens and status), loading the runtime if it lags behind."""
        wid = self.resolve(id_or_name).worker_id
        runtime = self.services.runtime
        worker = runtime.by_id.get(wid)
        if worker is None:
            # Not loaded here (a command that loads only what it needs, or created since this process
            # loaded): build this worker (and the crypto worker it uses) locally, not every worker;
            # this does not signal other processes.
            runtime.reload_workers([wid])
            worker = runtime.by_id.get(wid)
        if worker is None:  # pragma: no cover - removed concurrently
            raise UnknownWorkerError(f"worker {wid} disappeared while loading; try again")
        return worker

    def statuses(self, id_or_name: WorkerRef = "all") -> list[WorkerStatus]:
        """ACTIVE/OFFLINE with reasons, for one worker or all."""
        if str(id_or_name).lower() == "all":
            runtime = self.services.runtime
            if set(runtime.by_id) != set(self.store.worker_ids()):
                runtime.load()
            return [w.status() for w in runtime.workers()]
        return [self.loaded_worker(id_or_name).status()]

    def token(self, id_or_name: WorkerRef, active: bool = True) -> tuple[Worker, CryptoToken]:
        """The worker and the crypto token it uses; with ``active``, an offline token is an error."""
        worker = self.loaded_worker(id_or_name)
        token = worker.token
        if token is None:
            problems = "; ".join(worker.fatal_errors)
            raise ConfigurationError(
                f"worker '{worker.name}' has no usable crypto token" + (f" ({problems})" if problems else "")
                + "; set CRYPTOTOKEN=<crypto worker name> or CRYPTOTOKEN_IMPLEMENTATION_CLASS, then "
                f"signpeer reload {worker.name}")
        if active and not token.is_active:
            owner = worker.token_owner or worker.name
            via = "" if owner == worker.name else f" (the token of crypto worker '{owner}')"
            # Why, when the token knows more than "not activated" (a failed auto-activation, a missing keystore).
            known = [r for r in token.offline_reasons() if "not activated" not in r]
            why = f" ({'; '.join(known)})" if known else ""
            raise CryptoTokenOfflineError(
                f"the crypto token of worker '{worker.name}'{via} is not activated{why}; run "
                f"signpeer activatecryptotoken {owner} (or configure its password for auto-activation)")
        return worker, token

    def worker_token(self, id_or_name: WorkerRef, active: bool = True) -> tuple[WorkerConfig, Worker, CryptoToken]:
        """Resolve once: the stored configuration, the loaded worker and its token."""
        config = self.resolve(id_or_name)
        worker, token = self.token(config, active)
        return config, worker, token

    @staticmethod
    def token_name(worker: Worker) -> str:
        """The name the audit log gives a worker's token: its owner's (CRYPTOTOKEN) or its own."""
        return worker.token_owner or worker.name

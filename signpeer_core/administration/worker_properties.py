"""Worker properties: set, remove, create and delete workers, each change one SET_WORKER_CONFIG.

Changes are staged (:func:`~.publishing.stage`): stored with their audit record in one
transaction, active after ``reload`` as in SignServer. ``publish=True`` makes one active at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from signpeer_core.administration.base import AdminBase, WorkerRef, unknown_worker
from signpeer_core.administration.publishing import Change, publish, stage
from signpeer_core.audit import WORKER_CONFIG, AuditEvent, config_diff
from signpeer_core.config import TRUE_VALUES, WorkerConfig
from signpeer_core.errors import BadRequestError, ConflictError, UnknownWorkerError
from signpeer_core.identifiers import (
    MAX_WORKER_ID,
    check_encodable,
    check_identifier,
    is_number,
    shorten,
    worker_id_of,
)

#: The property that disables a worker, and the one recording who disabled it.
DISABLED = "DISABLED"
DISABLED_BY = "DISABLED_BY"
#: ``DISABLED_BY`` of a worker an administrator disabled (CLI, Admin Web, property files).
ADMIN_DISABLED_PREFIX = "ADMIN:"


class WorkerProperties(AdminBase):
    """The worker-properties operations of :class:`~signpeer_core.admin.WorkerAdmin`."""

    def _check_name(self, wid: int, name: str) -> None:
        if not name.strip():
            raise BadRequestError("NAME must not be empty")
        check_identifier(name, "NAME")
        if name.strip().isdigit() or is_number(name.strip()):
            raise BadRequestError(f"NAME '{name}' is a number; names must not be numeric (they would read as ids)")
        for other in self.store.worker_ids_with("NAME", name):  # indexed: reads no other worker
            if other != wid:
                taken = self.store.worker_properties(other).get("NAME", name)
                raise ConflictError(f"worker {other} is already named '{taken}'; choose another NAME")

    def worker_change(
        self, config: WorkerConfig, set_props: Mapping[str, str] | None = None, remove: Iterable[str] = (),
        extra_audit: Iterable[AuditEvent] = (),
    ) -> Change:
        """The change of one resolved worker with its SET_WORKER_CONFIG record (first), then ``extra_audit``."""
        sets = {k.strip().upper(): str(v) for k, v in (set_props or {}).items()}
        removes = [k.strip().upper() for k in remove]
        for k in list(sets) + removes:
            if not k:
                raise BadRequestError("a property key must not be empty")
            check_identifier(k, "a property key")
        for k, v in sets.items():
            check_encodable(v, f"the value of {k}")
        if "NAME" in sets:
            self._check_name(config.worker_id, sets["NAME"])
        self._record_disabled_by(config, sets, removes)
        change = Change().worker(config.worker_id, sets, removes)
        change.based_on[config.worker_id] = config
        details = config_diff(config.as_dict(), sets, removes)
        if details:
            change.record(self.event("SET_WORKER_CONFIG", WORKER_CONFIG, config.worker_id, details))
        return change.record(*extra_audit)

    def _record_disabled_by(self, config: WorkerConfig, sets: dict[str, str], removes: list[str]) -> None:
        """Who disabled a worker goes with ``DISABLED`` into ``DISABLED_BY`` (``ADMIN:<name>``), unless
        the caller records it itself (the peer endpoint writes ``PEER:<subject>``); enabling clears it."""
        if DISABLED_BY in sets or (DISABLED not in sets and DISABLED not in removes):
            return
        if DISABLED in sets and sets[DISABLED].strip().lower() in TRUE_VALUES:
            sets[DISABLED_BY] = f"{ADMIN_DISABLED_PREFIX}{self.admin.name}"
        elif DISABLED_BY in config.as_dict() and DISABLED_BY not in removes:
            removes.append(DISABLED_BY)

    def update_worker(
        self, id_or_name: WorkerRef, set_props: Mapping[str, str] | None = None, remove: Iterable[str] = (),
        create: bool = False, extra_audit: list[AuditEvent] | None = None, publish: bool = False,
    ) -> int:
        """Set and remove several properties of one worker in one transaction (one SET_WORKER_CONFIG).

        ``create``: a numeric id that does not exist yet becomes a new worker (SignServer's
        ``setproperty 7 NAME MySigner``). ``publish``: active at once (see :meth:`apply`).
        """
        try:
            config = self.resolve(id_or_name)
        except UnknownWorkerError:
            key = str(id_or_name).strip()
            wid = worker_id_of(key)
            if not create or wid is None:
                if create and is_number(key):
                    raise BadRequestError(f"worker id {shorten(key)} is out of range; ids are 1 to {MAX_WORKER_ID}") from None
                raise unknown_worker(key) from None
            config = WorkerConfig(wid, {})
        self.apply(self.worker_change(config, set_props, remove, extra_audit or ()),
                   [config.worker_id] if publish else None)
        return config.worker_id

    def apply(self, change: Change, publish_workers: list[int] | None = None) -> int | None:
        """Stage ``change``; or, with ``publish_workers``, publish it reloading those workers here."""
        if publish_workers is None:
            stage(self.store, change)
            return None
        return publish(self.services, change, publish_workers)

    def set_property(self, id_or_name: WorkerRef, key: str, value: str) -> int:
        """Set one worker property (a numeric id that does not exist creates the worker)."""
        return self.update_worker(id_or_name, {key: value}, create=True)

    def remove_property(self, id_or_name: WorkerRef, key: str) -> bool:
        """Remove one worker property; False when it was not set."""
        config = self.resolve(id_or_name)
        if key.strip().upper() not in config.as_dict():
            return False
        self.update_worker(config, remove=[key])
        return True

    def create_worker(self, properties: Mapping[str, str], worker_id: int | None = None) -> int:
        """A new worker with ``properties`` (NAME required); returns its id."""
        props = {k.strip().upper(): str(v) for k, v in properties.items()}
        if "NAME" not in props:
            raise BadRequestError("a new worker needs a NAME")
        wid = worker_id or self.store.next_worker_id()
        if self.store.worker_properties(wid):
            raise ConflictError(f"worker id {wid} is already taken")
        self._check_name(wid, props["NAME"])
        stage(self.store, Change().worker(wid, props).record(
            self.event("SET_WORKER_CONFIG", WORKER_CONFIG, wid, config_diff({}, props, ()))))
        return wid

    def ensure_worker(self, name: str, properties: Mapping[str, str]) -> int:
        """The worker named ``name``, created with ``properties`` when it does not exist."""
        wid = self.find_worker_id(name)
        if wid is not None and worker_id_of(name) is None:
            return wid
        return self.create_worker({**properties, "NAME": name})

    def remove_worker(self, id_or_name: WorkerRef) -> int:
        """Delete a worker's configuration (its keys stay in the token)."""
        config = self.resolve(id_or_name)
        old = config.as_dict()
        self.store.remove_worker(config.worker_id, audit=[self.event(
            "SET_WORKER_CONFIG", WORKER_CONFIG, config.worker_id, config_diff(old, {}, list(old)))])
        return config.worker_id

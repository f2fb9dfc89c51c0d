"""One way to write a configuration change, and one way to make it active: :func:`publish`.

A :class:`Change` is what an operation wants written: worker properties to set and remove,
global properties to set and remove, and the audit records that describe it. Both ways below
write the change and its audit records in ONE store transaction (the log never misses a change
that happened, and never records one that did not):

* :func:`stage` writes it, SignServer's way for ``setproperty`` and friends: the change is
  stored but becomes active only with the next ``reload``;
* :func:`publish` also bumps the configuration generation in that same transaction, so every
  server process reloads within its poll interval, and reloads this process's runtime right
  away (just the named workers, or everything) when it has one loaded.

Every caller goes through these two: the ``signpeer`` commands, property files, the Admin Web,
the client-rule commands and the peer endpoint's renewal.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from signpeer_core.audit import AuditEvent
from signpeer_core.config import WorkerConfig

if TYPE_CHECKING:
    from signpeer_core.services import Services
    from signpeer_core.storage import Store

# Bump and local reload in one step: when concurrent publishes bumped out of order, the runtime
# would look behind and the reload poller would rebuild every worker. The poller decides under
# it too (:func:`reload_if_behind`).
_PUBLISH_LOCK = threading.Lock()

log = logging.getLogger("signpeer.server")


@dataclass
class Change:
    """A configuration change with its audit records, written all or nothing."""

    workers: dict[int, tuple[dict[str, str], list[str]]] = field(default_factory=dict)
    global_set: dict[str, str] = field(default_factory=dict)
    global_remove: list[str] = field(default_factory=list)
    audit: list[AuditEvent] = field(default_factory=list)
    #: The stored configurations the change was computed from (resolved by the operation):
    #: :func:`publish` rebuilds those workers from them plus the change, without reading them again.
    based_on: dict[int, WorkerConfig] = field(default_factory=dict)

    def worker(self, worker_id: int, set_props: dict[str, str] | None = None,
               remove: Iterable[str] = ()) -> Change:
        """Add properties to set and remove on one worker (removals run first)."""
        sets, removes = self.workers.setdefault(worker_id, ({}, []))
        sets.update(set_props or {})
        removes.extend(k for k in remove if k not in removes)
        return self

    def record(self, *events: AuditEvent) -> Change:
        self.audit.extend(events)
        return self

    def config_after(self, worker_id: int) -> WorkerConfig | None:
        """The worker's configuration once this change is written, if it was computed from one."""
        base = self.based_on.get(worker_id)
        if base is None:
            return None
        sets, removes = self.workers.get(worker_id, ({}, []))
        props = {k: v for k, v in base.as_dict().items() if k not in {r.upper() for r in removes}}
        props.update({k.upper(): v for k, v in sets.items()})
        return WorkerConfig(worker_id, props)


def stage(store: Store, change: Change) -> None:
    """Write ``change`` and its audit records in one transaction; active after the next reload."""
    store.apply_changes(change.workers, change.global_set, change.global_remove, audit=change.audit)


def publish(services: Services, change: Change, workers: Iterable[int] | None = None) -> int:
    """Write ``change``, its audit records and the generation bump in one transaction; reload here.

    ``workers``: the ids whose loaded objects this process rebuilds (plus those using their
    tokens); None rebuilds every worker. A worker the change was computed from
    (:attr:`Change.based_on`) is rebuilt from that configuration plus the change, as written in
    the transaction (or, when only properties no build reads changed, replaced by a copy with
    that configuration: ``Runtime.reload_workers``); others are read from the store. A process that has not loaded its workers (a CLI
    command that only edits the store) has nothing to rebuild. Returns the new generation.
    """
    store = services.store
    runtime = services.runtime
    scope = None if workers is None else list(workers)
    if change.global_set or change.global_remove:
        scope = None  # global properties reach every worker: the other processes rebuild all
    with _PUBLISH_LOCK:
        generation = store.apply_changes(change.workers, change.global_set, change.global_remove,
                                         audit=change.audit, bump_generation=True, scope=scope)
        if generation is None:  # a backend that bumps without reporting the number
            generation = store.config_generation()
        if runtime.generation >= 0:
            if workers is None:
                runtime.load()
            else:
                ids = list(workers)
                known = {wid: c for wid in ids if (c := change.config_after(wid)) is not None}
                runtime.reload_workers(ids, generation, configs=known)
    return generation


def reload_if_behind(services: Services) -> bool:
    """Rebuild what another process published and this runtime has not loaded (the reload
    poller's step): the workers the missed generations name, or every worker when one of them
    concerned everything (global properties, ``reload all``); True when it reloaded.

    One read of the generation when nothing is behind; otherwise decided under the publish
    lock: a publish of this process commits its generation bump
    before it reloads its workers, and a poll that read the new generation in between would
    otherwise take it for another process's change and rebuild every worker (on a server with
    thousands of workers, during a peer's renew-all, most of the server's time).
    """
    runtime = services.runtime
    store = services.store
    if store.config_generation() == runtime.generation:
        return False  # not behind (a runtime never leads the store): no wait for the publish lock
    with _PUBLISH_LOCK:
        generation = store.config_generation()
        if generation == runtime.generation:
            return False
        # The generations this process missed say which workers they changed (record_scope):
        # a reload of one worker elsewhere rebuilds that worker here, not all of them.
        changed = store.changed_workers(runtime.generation, generation) if generation > runtime.generation >= 0 else None
        if changed is not None:
            log.info("configuration generation %s -> %s: reloading worker(s) %s", runtime.generation, generation,
                     ", ".join(map(str, sorted(changed))) or "(none)")
            runtime.reload_workers(changed, generation, caught_up=True)
            return True
        log.info("configuration generation %s -> %s: reloading workers", runtime.generation, generation)
        runtime.load()  # applies published activations too
        return True

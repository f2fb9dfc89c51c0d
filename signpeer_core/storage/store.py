"""The store: the one object ``Services.store`` holds, over the core's concepts and the database.

Each concept lives in its own module — :mod:`.configuration` (worker and global properties, the
reload counter), :mod:`.audit`, :mod:`.keystores`, :mod:`.activations` — and the store keeps
their methods under the names callers have always used. Plugins reach their own tables through
:attr:`Store.database` (transactions, reads, upserts) with their own metadata and migrations.

Every write runs in a transaction; a change that also writes audit events writes both in the same
transaction, so the log never misses a change that happened.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, insert, select

from signpeer_core.errors import ConfigurationError
from signpeer_core.storage.activations import TokenActivations
from signpeer_core.storage.audit import AuditEvent, AuditLog, Verification
from signpeer_core.storage.configuration import Configuration, WorkerChanges
from signpeer_core.storage.database import Database
from signpeer_core.storage.keystores import Keystores
from signpeer_core.storage.migrations import MigrationSource, core_source, migrate
from signpeer_core.storage.nodes import NodeRegistry
from signpeer_core.storage.protection import KeySource, SecretBox
from signpeer_core.storage.tables import meta

log = logging.getLogger("signpeer.storage")

KEY_CHECK = "protection.key_check"


def open_store(url: str, sources: Sequence[MigrationSource] = (), key: KeySource | None = None,
               node: str | None = None) -> Store:
    """Open the database named by a URL (``sqlite:///<path>`` or ``postgresql://...``), migrate the core's tables and
    those of ``sources`` (the plugins' ``signpeer_migrations``) to their newest revisions, and
    load its data protection key (``key``; default: ``signpeer.key`` beside an SQLite database
    or ``SIGNPEER_KEY``, see :mod:`.protection`). ``node`` is the node id its audit records are
    written as (``Settings.node_id``; default the host name)."""
    database = Database(url)
    try:
        migrate(database, [core_source(), *sources])
        box = _protection(database, key or KeySource(url))
    except BaseException:
        database.close()
        raise
    return Store(database, box, node)


def _protection(database: Database, source: KeySource) -> SecretBox:
    """The database's key, checked against the one it recorded; set up on first use (the check
    recorded, secrets stored in clear encrypted, the audit records so far chained)."""
    check_query = select(meta.c.value).where(meta.c.key == KEY_CHECK)
    with database.read() as conn:
        stored = conn.execute(check_query).scalar()
    box = source.load(stored)
    if stored is None:
        with database.transaction() as conn:
            database.serialize(conn, "data-protection")  # two nodes opening a fresh database at once
            if conn.execute(check_query).scalar() is None:  # not set up by another process meanwhile
                conn.execute(insert(meta), {"key": KEY_CHECK, "value": box.check})
                sealed = Configuration(database, AuditLog(database, box), box).seal_plaintext_secrets(conn)
                chained = AuditLog(database, box).seal_existing(conn)
                if sealed or chained:
                    log.info("data protection key %s: %d stored secrets encrypted, %d audit records chained",
                             box.origin, sealed, chained)
            stored = conn.execute(check_query).scalar()
    if stored != box.check:
        raise ConfigurationError(
            f"the data protection key ({box.origin}) is not the key of the database {database.description}: "
            "use the key file made with this database (restore it from the same backup)")
    return box


class Store:
    """The core's storage, by concept, and the database for plugins' own tables."""

    def __init__(self, database: Database, box: SecretBox, node: str | None = None) -> None:
        self.database = database
        self.box = box
        self.audit_log = AuditLog(database, box, node)
        self.configuration = Configuration(database, self.audit_log, box)
        self.keystores = Keystores(database, self.audit_log)
        self.activations = TokenActivations(database)
        self.nodes = NodeRegistry(database)

    # -- worker properties -----------------------------------------------------------------
    def worker_ids(self) -> list[int]:
        return self.configuration.worker_ids()

    def worker_properties(self, worker_id: int) -> dict[str, str]:
        return self.configuration.worker_properties(worker_id)

    def all_worker_properties(self) -> dict[int, dict[str, str]]:
        return self.configuration.all_worker_properties()

    def worker_ids_with(self, key: str, value: str) -> list[int]:
        return self.configuration.worker_ids_with(key, value)

    def worker_id_by_name(self, name: str) -> int | None:
        """The lowest id of the workers NAMEd ``name`` (case-insensitive), or None; one indexed read."""
        ids = self.configuration.worker_ids_with("NAME", name)
        return ids[0] if ids else None

    def update_worker(self, worker_id: int, set_props: Mapping[str, object] | None = None,
                      remove: Iterable[str] = (), audit: list[AuditEvent] | None = None) -> None:
        self.configuration.update_worker(worker_id, set_props, remove, audit)

    def remove_worker(self, worker_id: int, audit: list[AuditEvent] | None = None) -> None:
        self.configuration.remove_worker(worker_id, audit)

    def next_worker_id(self) -> int:
        return self.configuration.next_worker_id()

    def apply_changes(self, workers: WorkerChanges | None = None, global_set: Mapping[str, object] | None = None,
                      global_remove: Iterable[str] = (), audit: list[AuditEvent] | None = None,
                      bump_generation: bool = False, scope: Iterable[int] | None = None) -> int | None:
        """See :meth:`Configuration.apply_changes`: all in one transaction, optionally published
        (``scope``: the workers the published generation concerns; None: everything)."""
        return self.configuration.apply_changes(workers, global_set, global_remove, audit, bump_generation, scope)

    # -- global properties -----------------------------------------------------------------
    def global_properties(self) -> dict[str, str]:
        return self.configuration.global_properties()

    def update_global(self, set_props: Mapping[str, object] | None = None, remove: Iterable[str] = (),
                      audit: list[AuditEvent] | None = None) -> None:
        self.configuration.update_global(set_props, remove, audit)

    # -- reload signalling ---------------------------------------------------------------
    def config_generation(self) -> int:
        return self.configuration.config_generation()

    def changed_workers(self, since: int, until: int) -> set[int] | None:
        return self.configuration.changed_workers(since, until)

    def bump_config_generation(self) -> int:
        return self.configuration.bump_config_generation()

    # -- token activation relay -------------------------------------------------------------
    def token_activations(self, node: str) -> dict[int, tuple[bool, bytes | None]]:
        return self.activations.for_node(node)

    def set_token_activation(self, worker_id: int, node: str, active: bool, sealed: bytes | None) -> int:
        return self.activations.set(worker_id, node, active, sealed)

    def clear_token_activations(self, node: str) -> None:
        self.activations.clear(node)

    def activation_generation(self) -> int:
        return self.activations.generation()

    # -- audit ---------------------------------------------------------------------------
    def audit(self, event: AuditEvent) -> None:
        self.audit_log.add(event)

    def audit_events(
        self, event: str | None = None, worker_id: int | None = None, admin: str | None = None,
        since: float | None = None, until: float | None = None, limit: int = 1000, node: str | None = None,
    ) -> list[AuditEvent]:
        return self.audit_log.events(event, worker_id, admin, since, until, limit, node)

    def query_audit(self, terms: Iterable[tuple[str, str, Any]], offset: int = 0, limit: int = 1000) -> list[AuditEvent]:
        """SignServer's ``auditlog -query``: see :meth:`AuditLog.query <signpeer_core.storage.audit.AuditLog.query>`."""
        return self.audit_log.query(terms, offset, limit)

    def write_audit(self, conn: Connection, events: Iterable[AuditEvent]) -> None:
        """Append audit events in a caller's own transaction (a plugin's change to its own tables
        and its audit record, all or nothing)."""
        self.audit_log.write(conn, events)

    def verify_audit_log(self) -> Verification:
        """Check the audit log's HMAC chain (``signpeer auditlog --verify``)."""
        return self.audit_log.verify()

    # -- INTERNAL keystores --------------------------------------------------------------
    def keystore(self, worker_id: int) -> bytes | None:
        return self.keystores.get(worker_id)

    def put_keystore(self, worker_id: int, data: bytes, audit: list[AuditEvent] | None = None) -> None:
        self.keystores.put(worker_id, data, audit)

    def close(self) -> None:
        self.database.close()

"""The configuration: worker properties, global properties and the ``config_generation`` counter.

Property keys are stored upper case (SignServer's properties are case-insensitive). Every change
runs in one transaction with its audit events; :meth:`Configuration.apply_changes` can also bump
``config_generation`` in that transaction, so a published change, its audit records and the
signal that makes it active are all or nothing.

``config_generation`` is bumped by ``reload`` (and notified on its channel); each server process
listens, and rebuilds its in-memory workers when it changes. Signing requests never touch the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import Connection, bindparam, delete, func, select

from signpeer_core.audit import is_secret_key
from signpeer_core.identifiers import DEMO_ID_BAND
from signpeer_core.storage import generations
from signpeer_core.storage.audit import AuditEvent, AuditLog
from signpeer_core.storage.database import Database
from signpeer_core.storage.generations import CONFIG
from signpeer_core.storage.keystores import delete_keystore
from signpeer_core.storage.protection import PREFIX, SecretBox
from signpeer_core.storage.tables import global_properties, worker_properties

_w = worker_properties
_g = global_properties
_WORKER_IDS = select(_w.c.worker_id).distinct().order_by(_w.c.worker_id)
_WORKER = select(_w.c.key, _w.c.value).where(_w.c.worker_id == bindparam("worker_id"))
_ALL_WORKERS = select(_w.c.worker_id, _w.c.key, _w.c.value)
#: The workers whose property ``key`` is (case-insensitively) ``lowered`` (a NAME, a CRYPTOTOKEN):
#: served by the index on ``(key, lower(value))`` (core_0006), so finding one worker by name reads
#: no other worker. SQL's ``lower`` folds ASCII only: other values are compared in Python.
_BY_VALUE = (select(_w.c.worker_id, _w.c.value)
             .where(_w.c.key == bindparam("key"), func.lower(_w.c.value) == bindparam("lowered"))
             .order_by(_w.c.worker_id))
_BY_KEY = select(_w.c.worker_id, _w.c.value).where(_w.c.key == bindparam("key")).order_by(_w.c.worker_id)
_MAX_WORKER_ID = select(func.max(_w.c.worker_id)).where(_w.c.worker_id < DEMO_ID_BAND)
_REMOVE_WORKER_KEY = delete(_w).where(_w.c.worker_id == bindparam("wid"), _w.c.key == bindparam("k"))
_REMOVE_WORKER = delete(_w).where(_w.c.worker_id == bindparam("worker_id"))
_GLOBALS = select(_g.c.key, _g.c.value)
_REMOVE_GLOBAL = delete(_g).where(_g.c.key == bindparam("k"))

#: Worker id → (properties to set, keys to remove).
WorkerChanges = Mapping[int, tuple[Mapping[str, object], Iterable[str]]]


class Configuration:
    """Worker and global properties, and the reload counter.

    Secret properties (:func:`~signpeer_core.audit.is_secret_key`: passwords, PINs) are stored
    encrypted with the data protection key (:mod:`.protection`) and read back in clear.
    """

    def __init__(self, database: Database, audit_log: AuditLog, box: SecretBox) -> None:
        self.database = database
        self.audit_log = audit_log
        self.box = box
        self._set_worker = database.upsert(_w, ["worker_id", "key"])
        self._write_worker = database.prepare_write(self._set_worker)  # every published change writes it
        self._set_global = database.upsert(_g, ["key"])
        # Hot reads (each renewal step resolves its worker; every server process polls the
        # generation): compiled once, run on the driver's cursor.
        self._worker = database.prepare(_WORKER)
        self._by_value = database.prepare(_BY_VALUE)
        self._generation = database.prepare(generations.READ)
        self._scopes = database.prepare(generations.READ_SCOPES)

    # -- writes inside a caller's transaction --------------------------------------------------
    def write_worker(self, conn: Connection, worker_id: int, set_props: Mapping[str, object] | None,
                     remove: Iterable[str]) -> None:
        """Removals first, then the values to set (keys upper-cased, values as strings)."""
        removals = [{"wid": worker_id, "k": key.upper()} for key in remove]
        if removals:
            conn.execute(_REMOVE_WORKER_KEY, removals)
        rows = [{"worker_id": worker_id, "key": key.upper(), "value": self._stored(key, value)}
                for key, value in (set_props or {}).items()]
        if rows:
            self._write_worker.run_in(conn, rows)

    def write_global(self, conn: Connection, set_props: Mapping[str, object] | None, remove: Iterable[str]) -> None:
        removals = [{"k": key.upper()} for key in remove]
        if removals:
            conn.execute(_REMOVE_GLOBAL, removals)
        rows = [{"key": key.upper(), "value": self._stored(key, value)} for key, value in (set_props or {}).items()]
        if rows:
            conn.execute(self._set_global, rows)

    def _stored(self, key: str, value: object) -> str:
        text = str(value)
        return self.box.seal(text) if is_secret_key(key) and text else text

    def _read(self, value: str) -> str:
        return self.box.open(value) if value.startswith(PREFIX) else value

    def seal_plaintext_secrets(self, conn: Connection) -> int:
        """Encrypt the secret values stored in clear (by a signpeer before encryption, or before a
        plugin declared them secret); in the caller's transaction. Returns how many."""
        workers = [{"worker_id": wid, "key": k, "value": self.box.seal(v)}
                   for wid, k, v in conn.execute(_ALL_WORKERS).all()
                   if v and is_secret_key(k) and not v.startswith(PREFIX)]
        globals_ = [{"key": k, "value": self.box.seal(v)} for k, v in conn.execute(_GLOBALS).all()
                    if v and is_secret_key(k) and not v.startswith(PREFIX)]
        if workers:
            conn.execute(self._set_worker, workers)
        if globals_:
            conn.execute(self._set_global, globals_)
        return len(workers) + len(globals_)

    # -- worker properties -----------------------------------------------------------------
    def worker_ids(self) -> list[int]:
        with self.database.read() as conn:
            return list(conn.execute(_WORKER_IDS).scalars())

    def worker_properties(self, worker_id: int) -> dict[str, str]:
        return {key: self._read(value) for key, value in self._worker.all({"worker_id": worker_id})}

    def worker_ids_with(self, key: str, value: str) -> list[int]:
        """The ids (ascending) of the workers whose property ``key`` equals ``value`` ignoring case
        (e.g. every worker NAMEd ``Signer1``, or using the token of ``CryptoWorker1``)."""
        wanted = value.strip().lower()
        if not wanted or "\x00" in wanted:  # no stored value holds NUL (refused on write; PostgreSQL text can't)
            return []
        if wanted.isascii():
            rows: list[tuple[int, str]] = [(wid, stored) for wid, stored in self._by_value.all(
                {"key": key.upper(), "lowered": wanted})]
        else:  # SQL's lower() folds only ASCII: compare this key's rows (not whole workers) here
            with self.database.read() as conn:
                rows = [(wid, stored) for wid, stored in conn.execute(_BY_KEY, {"key": key.upper()}).all()]
        return [wid for wid, stored in rows if stored.lower() == wanted]

    def all_worker_properties(self) -> dict[int, dict[str, str]]:
        out: dict[int, dict[str, str]] = {}
        with self.database.read() as conn:
            rows = conn.execute(_ALL_WORKERS).all()  # fetching all at once is much faster than iterating
        for wid, key, value in rows:
            out.setdefault(wid, {})[key] = self._read(value)
        return out

    def update_worker(self, worker_id: int, set_props: Mapping[str, object] | None = None,
                      remove: Iterable[str] = (), audit: list[AuditEvent] | None = None) -> None:
        with self.database.transaction() as conn:
            self.write_worker(conn, worker_id, set_props, remove)
            self.audit_log.write(conn, audit)

    def remove_worker(self, worker_id: int, audit: list[AuditEvent] | None = None) -> None:
        """Every property of the worker and its INTERNAL keystore."""
        with self.database.transaction() as conn:
            conn.execute(_REMOVE_WORKER, {"worker_id": worker_id})
            delete_keystore(conn, worker_id)
            self.audit_log.write(conn, audit)

    def next_worker_id(self) -> int:
        """SignServer's rule, the highest id + 1, over the ids below :data:`DEMO_ID_BAND`."""
        with self.database.read() as conn:
            return (conn.execute(_MAX_WORKER_ID).scalar() or 0) + 1

    def apply_changes(self, workers: WorkerChanges | None = None, global_set: Mapping[str, object] | None = None,
                      global_remove: Iterable[str] = (), audit: list[AuditEvent] | None = None,
                      bump_generation: bool = False, scope: Iterable[int] | None = None) -> int | None:
        """Several workers' and global changes in ONE transaction (property files: all or nothing).

        ``workers`` maps a worker id to (properties to set, keys to remove); removals run first.
        With ``bump_generation`` the same transaction bumps ``config_generation`` (the change is
        published: every server process reloads) and the new generation is returned; ``scope``
        names the workers the new generation concerns (None: everything), so that server
        processes rebuild only those (:func:`~signpeer_core.storage.generations.record_scope`).
        """
        with self.database.transaction() as conn:
            for worker_id, (set_props, remove) in (workers or {}).items():
                self.write_worker(conn, worker_id, set_props, remove)
            self.write_global(conn, global_set, global_remove)
            self.audit_log.write(conn, audit)
            if not bump_generation:
                return None
            generation = generations.bump_generation(conn, CONFIG, self.database)
            generations.record_scope(conn, generation, scope, self.database)
            return generation

    # -- global properties -----------------------------------------------------------------
    def global_properties(self) -> dict[str, str]:
        with self.database.read() as conn:
            rows = conn.execute(_GLOBALS).all()
        return {key: self._read(value) for key, value in rows}

    def update_global(self, set_props: Mapping[str, object] | None = None, remove: Iterable[str] = (),
                      audit: list[AuditEvent] | None = None) -> None:
        with self.database.transaction() as conn:
            self.write_global(conn, set_props, remove)
            self.audit_log.write(conn, audit)

    # -- reload --------------------------------------------------------------------------
    def config_generation(self) -> int:
        return int(self._generation.scalar({"name": CONFIG}))

    def changed_workers(self, since: int, until: int) -> set[int] | None:
        """The workers that generations ``since`` (exclusive) to ``until`` changed, or None when
        one of them changed everything (or is no longer remembered)."""
        if until - since > generations.KEPT_SCOPES:
            return None
        rows = self._scopes.all({"prefix": generations.SCOPES + "%"})
        return generations.changed_workers(rows, since, until)

    def bump_config_generation(self) -> int:
        with self.database.transaction() as conn:
            return generations.bump_generation(conn, CONFIG, self.database)

"""The runtime: every loaded worker of one process, in memory.

:class:`Runtime` loads every worker from the store on ``reload`` and serves lookups from
memory, so signing requests never touch the database. Problems found while loading do not
stop the server: they make that worker OFFLINE with reasons that say what to fix.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from signpeer_core.config import WorkerConfig, global_value
from signpeer_core.errors import ConfigurationError, SignpeerError, UnknownWorkerError
from signpeer_core.identifiers import shorten, worker_id_of
from signpeer_core.tokens import CryptoToken
from signpeer_core.workers import BrokenWorker, Worker

if TYPE_CHECKING:
    from signpeer_core.services import Services

log = logging.getLogger("signpeer.workers")


class Runtime:
    """The loaded workers of one process, rebuilt by :meth:`load` on every reload."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.by_id: dict[int, Worker] = {}
        self.by_name: dict[str, Worker] = {}
        self.global_properties: dict[str, str] = {}
        self.generation = -1
        self._tokens: dict[int, CryptoToken] = {}
        self._token_errors: dict[int, str] = {}
        self._loading: dict[int, Worker] = {}
        #: During a partial rebuild (:meth:`reload_workers`): the loaded workers and the ids rebuilt.
        self._unchanged: tuple[dict[int, Worker], set[int]] | None = None
        self._configs: dict[int, WorkerConfig] = {}
        #: During a (re)build: the previous build's tokens, to keep those whose configuration is unchanged.
        self._old_tokens: dict[int, CryptoToken] = {}
        self._lock = threading.RLock()

    # -- lookups (hot path: memory only) ---------------------------------------------------
    def get(self, id_or_name: str | int) -> Worker:
        key = str(id_or_name).strip()
        wid = worker_id_of(key)
        worker = self.by_id.get(wid) if wid is not None else self.by_name.get(key.lower())
        if worker is None:
            raise UnknownWorkerError(f"no worker '{shorten(key)}'; list them with signpeer getstatus brief all")
        return worker

    def workers(self) -> list[Worker]:
        return [self.by_id[i] for i in sorted(self.by_id)]

    def global_value(self, name: str, default: str | None = None) -> str | None:
        return global_value(self.global_properties, name, self.services.settings.node_id, default)

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> None:
        """(Re)build every worker from the store. Tokens whose configuration is unchanged are
        kept, so a reload does not deactivate them."""
        store = self.services.store
        with self._lock:
            generation = store.config_generation()
            all_props = store.all_worker_properties()
            self.global_properties = store.global_properties()
            self._configs = {wid: WorkerConfig(wid, props) for wid, props in all_props.items()}
            self._refs: dict[str, set[int]] | None = None
            self._name_index: dict[str, int] | None = None
            old_tokens, self._tokens, self._token_errors = self._tokens, {}, {}
            self._old_tokens = old_tokens
            self._loading = {}
            by_id: dict[int, Worker] = {}
            for wid in sorted(self._configs):
                by_id[wid] = self._build(wid)
            self._close_replaced_tokens()
            self.by_id = by_id
            self.by_name = {w.name.lower(): w for w in by_id.values()}
            self.generation = generation
            self._old_tokens = {}
            # New token instances start inactive: give them what an administrator activated
            # through another process of this server (activation.py).
            self.services.activation.apply()

    def reload_workers(self, worker_ids: list[int] | set[int], generation: int | None = None,
                       configs: Mapping[int, WorkerConfig] | None = None) -> None:
        """Rebuild only some workers from the store (plus those naming them in ``CRYPTOTOKEN``).

        For changes that concern one worker (a peer-driven renewal): the others, their tokens
        and their activation stay as they are, and requests in flight finish on the old worker
        object. ``generation``: the generation the caller just bumped to; when it is exactly one
        ahead of this runtime, this runtime is then current and the reload poller skips a full
        ``load()``. ``configs``: the configurations of (some of) these workers as the caller has
        just written them (:func:`~signpeer_core.administration.publish`); the others are read.
        """
        store = self.services.store
        with self._lock:
            changed = set(worker_ids)
            refs = self._token_refs()
            for wid in list(changed):
                old = self._configs.get(wid)
                known = (configs or {}).get(wid)
                props = known.as_dict() if known is not None else store.worker_properties(wid)
                if props:
                    self._configs[wid] = known if known is not None else WorkerConfig(wid, props)
                else:
                    self._configs.pop(wid, None)
                new = self._configs.get(wid)
                if (old.get_str("CRYPTOTOKEN") if old else None) != (new.get_str("CRYPTOTOKEN") if new else None):
                    self._refs = None  # a reference changed: rebuild the index next time
                if (old.name if old else None) != (new.name if new else None):
                    self._name_index = None
            names = {str(w) for w in changed} | {self._configs[w].name.lower() for w in changed if w in self._configs}
            for name in names:  # workers that use a changed worker's token get the new one too
                changed |= refs.get(name, set())
            self._old_tokens = {wid: self._tokens.pop(wid) for wid in changed if wid in self._tokens}
            kept = dict(self._old_tokens)
            for wid in changed:
                self._token_errors.pop(wid, None)
            # The workers kept are looked up in by_id (no per-worker copy: one renewal's rebuild
            # must not cost time in proportion to every worker of the server).
            self._loading, self._unchanged = {}, (self.by_id, changed)
            by_id, by_name = dict(self.by_id), dict(self.by_name)
            for wid in sorted(changed):
                old_worker = by_id.pop(wid, None)
                if old_worker is not None and by_name.get(old_worker.name.lower()) is old_worker:
                    del by_name[old_worker.name.lower()]
                if wid in self._configs:
                    by_id[wid] = self._build(wid)
            for wid in sorted(changed):
                if wid in by_id:
                    by_name[by_id[wid].name.lower()] = by_id[wid]
            self._unchanged = None
            self._close_replaced_tokens()
            self.by_id = dict(sorted(by_id.items())) if any(w not in self.by_id for w in changed) else by_id
            self.by_name = by_name
            if generation is not None and generation == self.generation + 1:
                self.generation = generation
            self._old_tokens = {}
            # New token instances start inactive: give them what was activated through another
            # process. Tokens kept as they were need nothing (the poller applies activations
            # published meanwhile), so a renewal's rebuild reads no activation rows.
            if any(self._tokens.get(wid) is not token for wid, token in kept.items()) or \
                    any(wid in self._tokens and wid not in kept for wid in changed):
                self.services.activation.apply()

    @property
    def lock(self) -> threading.RLock:
        """Held while workers are rebuilt; take it before the activation relay's lock."""
        return self._lock

    def own_token(self, worker_id: int) -> CryptoToken | None:
        """The token a worker holds itself (``CRYPTOTOKEN_IMPLEMENTATION_CLASS``), if loaded."""
        return self._tokens.get(worker_id)

    def active_token_owners(self) -> list[int]:
        """The ids of the workers whose own token is active in this process (memory only)."""
        return sorted(wid for wid, token in list(self._tokens.items()) if token.is_active)

    def refresh_token_users(self, owner_id: int) -> None:
        """Signers resolve key and chain against an active token: re-resolve those using
        ``owner_id``'s token after it was activated, without a reload."""
        owner = self.by_id.get(owner_id)
        if owner is None:
            return
        for w in self.workers():
            if (w.token_owner or w.name) == owner.name:
                try:
                    w.refresh()
                except SignpeerError:
                    log.warning("worker %s could not resolve its key after activation", w.name)

    def _close_replaced_tokens(self) -> None:
        """Close the tokens of the previous build that the new one did not keep."""
        for wid, token in self._old_tokens.items():
            if self._tokens.get(wid) is not token:
                try:
                    token.close()
                except Exception:  # closing a stale token must not stop a reload
                    log.exception("closing the old crypto token of worker %s failed", wid)

    def _token_refs(self) -> dict[str, set[int]]:
        """Lower-case ``CRYPTOTOKEN`` value → ids of the workers naming it (built once per load)."""
        refs = getattr(self, "_refs", None)
        if refs is None:
            refs = {}
            for wid, c in self._configs.items():
                ref = c.get_str("CRYPTOTOKEN").lower()
                if ref:
                    refs.setdefault(ref, set()).add(wid)
            self._refs = refs
        return refs

    def _ids_by_name(self) -> dict[str, int]:
        """Lower-case worker name → id over the configurations being built (once per (re)build:
        resolving each signer's ``CRYPTOTOKEN`` by a scan made loading 10,000 workers quadratic)."""
        index = getattr(self, "_name_index", None)
        if index is None:
            index = {}
            for wid in sorted(self._configs, reverse=True):  # the lowest id wins a duplicated name
                index[self._configs[wid].name.lower()] = wid
            self._name_index = index
        return index

    def _build(self, wid: int) -> Worker:
        if wid in self._loading:
            return self._loading[wid]
        if self._unchanged is not None and wid not in self._unchanged[1] and wid in self._unchanged[0]:
            return self._unchanged[0][wid]  # a partial rebuild keeps this one as it is
        config = self._configs[wid]
        registry = self.services.registry
        impl = config.get_str("IMPLEMENTATION_CLASS")
        worker: Worker
        try:
            if not impl:
                raise ConfigurationError("IMPLEMENTATION_CLASS is not set")
            cls = registry.worker_types.get(impl, "IMPLEMENTATION_CLASS")
            worker = cls(config, self.services)
        except SignpeerError as exc:
            worker = BrokenWorker(config, self.services)
            worker.fatal_errors.append(exc.message)
            self._loading[wid] = worker
            return worker
        self._loading[wid] = worker
        try:
            worker.load(self)
        except SignpeerError as exc:
            worker.fatal_errors.append(exc.message)
        except Exception as exc:  # a plugin bug must not take the whole server down
            log.exception("loading worker %s (%s) failed", wid, config.name)
            worker.fatal_errors.append(f"failed to load: {type(exc).__name__}: {exc}")
        return worker

    def token_for(self, worker: Worker) -> CryptoToken | None:
        """The worker's own token, or the one of the worker its ``CRYPTOTOKEN`` names."""
        config = worker.config
        if config.get_str("CRYPTOTOKEN_IMPLEMENTATION_CLASS"):
            return self._own_token(worker)
        ref = config.get_str("CRYPTOTOKEN")
        if not ref:
            return None
        target_id = self._ids_by_name().get(ref.lower())
        if target_id is None and worker_id_of(ref) in self._configs:
            target_id = worker_id_of(ref)
        if target_id is None:
            raise ConfigurationError(f"CRYPTOTOKEN names '{ref}', but there is no worker with that name")
        if target_id == worker.id:
            raise ConfigurationError("CRYPTOTOKEN names the worker itself")
        target = self._build(target_id)
        token = target.crypto_token()
        if token is None:
            problem = "; ".join(target.fatal_errors) or "it has no crypto token"
            raise ConfigurationError(f"the crypto worker '{ref}' named in CRYPTOTOKEN is not usable: {problem}")
        worker.token_owner = target.name
        return token

    def _own_token(self, worker: Worker) -> CryptoToken:
        wid = worker.id
        if wid in self._tokens:
            return self._tokens[wid]
        if wid in self._token_errors:
            raise ConfigurationError(self._token_errors[wid])
        config = worker.config
        old = self._old_tokens.get(wid)
        if old is not None and old.same_configuration(config):
            self._tokens[wid] = old
            return old
        try:
            cls = self.services.registry.token_types.get(
                config.get_str("CRYPTOTOKEN_IMPLEMENTATION_CLASS"), "CRYPTOTOKEN_IMPLEMENTATION_CLASS")
            token = cls(wid, config, self.services)
        except SignpeerError as exc:
            self._token_errors[wid] = exc.message
            raise
        try:
            token.auto_activate()
        except SignpeerError as exc:
            log.warning("worker %s: auto-activation failed: %s", config.name, exc.message)
        self._tokens[wid] = token
        worker.token_owner = worker.name
        return token

    def close(self) -> None:
        for token in self._tokens.values():
            try:
                token.close()
            except Exception:
                log.exception("closing a crypto token failed")
        self._tokens = {}

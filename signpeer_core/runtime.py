"""The runtime: every loaded worker of one process, in memory.

:class:`Runtime` loads every worker from the store on ``reload`` and serves lookups from
memory, so signing requests never touch the database. Problems found while loading do not
stop the server: they make that worker OFFLINE with reasons that say what to fix.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from signpeer_core import collector
from signpeer_core.config import WorkerConfig, global_value
from signpeer_core.errors import ConfigurationError, SignpeerError, UnknownWorkerError
from signpeer_core.identifiers import shorten, worker_id_of
from signpeer_core.tokens import CryptoToken
from signpeer_core.workers import BrokenWorker, Worker

if TYPE_CHECKING:
    from signpeer_core.services import Services

log = logging.getLogger("signpeer.workers")


#: Worker properties no build reads (only the administration reads them, from the store): a
#: published change of these alone swaps the loaded worker for a copy with the new configuration
#: (:meth:`Worker.with_config`) instead of rebuilding it, in the publishing process and in the
#: others catching up. A worker type must not read them in ``__init__`` or ``load``.
UNBUILT_PROPERTIES = frozenset({"NEXTCERTSIGNKEY"})


def only_unbuilt_changes(old: WorkerConfig, new: WorkerConfig) -> bool:
    """Whether ``new`` differs from ``old``, and only in :data:`UNBUILT_PROPERTIES`."""
    before, after = old.as_dict(), new.as_dict()
    if before == after or old.worker_id != new.worker_id:
        return False  # unchanged: a reload asked for (``reload <worker>``) builds the worker again
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} <= UNBUILT_PROPERTIES


class Runtime:
    """The loaded workers of one process, rebuilt by :meth:`load` on every reload."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.by_id: dict[int, Worker] = {}
        self.by_name: dict[str, Worker] = {}
        #: Counts the loads and reloads that put workers in :attr:`by_id` and :attr:`by_name`
        #: (new maps, or one worker replaced in place): a cache of look-ups compares it, not the maps.
        self.replacements = 0
        self.global_properties: dict[str, str] = {}
        self.generation = -1
        self._tokens: dict[int, CryptoToken] = {}
        self._token_errors: dict[int, str] = {}
        self._loading: dict[int, Worker] = {}
        #: During a partial rebuild (:meth:`reload_workers`): the loaded workers and the ids rebuilt.
        self._configs: dict[int, WorkerConfig] = {}
        #: During a (re)build: the previous build's tokens, to keep those whose configuration is unchanged.
        self._old_tokens: dict[int, CryptoToken] = {}
        #: During a partial rebuild (:meth:`reload_workers`): the ids being rebuilt.
        self._rebuilding: set[int] | None = None
        self._refs: dict[str, set[int]] | None = None
        self._name_index: dict[str, int] | None = None
        #: True once :meth:`load` built every worker; a CLI process builds only what it needs.
        self.complete = False
        self._ids: list[int] | None = None
        #: How many workers this runtime built (for tests that pin a reload's cost to its workers).
        self.builds = 0
        self._lock = threading.RLock()
        #: The workers whose own token this runtime built, replaced or (de)activated since the last
        #: :meth:`take_token_changes`; None: not known which (a full :meth:`load`), any may have.
        self._token_changes: set[int] | None = None

    # -- lookups (hot path: memory only) ---------------------------------------------------
    def get(self, id_or_name: str | int) -> Worker:
        if type(id_or_name) is str:  # the usual: a name as a request spells it, without blanks around
            worker = self.by_name.get(id_or_name.lower())
            if worker is not None and not id_or_name.isdigit() and id_or_name.strip() == id_or_name:
                return worker  # (digits are read as an id first, and blanks are stripped: the way below)
        key = str(id_or_name).strip()
        wid = worker_id_of(key)
        worker = self.by_id.get(wid) if wid is not None else self.by_name.get(key.lower())
        if worker is None:
            raise UnknownWorkerError(f"no worker '{shorten(key)}'; list them with signpeer getstatus brief all")
        return worker

    def workers(self) -> list[Worker]:
        by_id = self.by_id
        return [by_id[i] for i in self.ids() if i in by_id]

    def ids(self) -> list[int]:
        """The loaded workers' ids in ascending order (kept between reloads that add or remove none)."""
        ids = self._ids
        if ids is None:
            ids = self._ids = sorted(self.by_id)
        return ids

    def workers_after(self, after: int | None, limit: int, keep: Callable[[Worker], bool]) -> tuple[list[Worker], bool]:
        """Up to ``limit`` workers with ids above ``after`` for which ``keep`` is true, by id, and
        whether more such workers follow: a page of a listing, found by bisection, not a scan."""
        ids, by_id = self.ids(), self.by_id
        page: list[Worker] = []
        for i in range(bisect.bisect_right(ids, after) if after is not None else 0, len(ids)):
            worker = by_id.get(ids[i])
            if worker is None or not keep(worker):
                continue
            if len(page) == limit:
                return page, True
            page.append(worker)
        return page, False

    def global_value(self, name: str, default: str | None = None) -> str | None:
        return global_value(self.global_properties, name, self.services.settings.node_id, default)

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> None:
        """(Re)build every worker from the store. Tokens whose configuration is unchanged are
        kept, so a reload does not deactivate them."""
        store = self.services.store
        collector.thaw()  # the workers replaced here may hold reference cycles (collector.py)
        with self._lock:
            generation = store.config_generation()
            all_props = store.all_worker_properties()
            self.global_properties = store.global_properties()
            self._configs = {wid: WorkerConfig(wid, props) for wid, props in all_props.items()}
            self._refs = None
            self._name_index = None
            self._rebuilding = None
            old_tokens, self._tokens, self._token_errors = self._tokens, {}, {}
            self._old_tokens = old_tokens
            self._token_changes = None
            self._loading = {}
            by_id: dict[int, Worker] = {}
            for wid in sorted(self._configs):
                by_id[wid] = self._build(wid)
            self._close_replaced_tokens()
            self.by_id = by_id
            self.by_name = {w.name.lower(): w for w in by_id.values()}
            self.replacements += 1
            self._ids = None
            self.generation = generation
            self.complete = True
            self._old_tokens = {}
            self._loading = {}
            # New token instances start inactive: give them what an administrator activated
            # through another process of this server (activation.py).
            self.services.activation.apply()

    def reload_workers(self, worker_ids: list[int] | set[int], generation: int | None = None,
                       caught_up: bool = False,
                       configs: Mapping[int, WorkerConfig] | None = None) -> None:
        """Rebuild only some workers from the store (plus those naming them in ``CRYPTOTOKEN``).

        For changes that concern one worker (``reload <one>``, a peer-driven renewal): the
        others, their tokens and their activation stay as they are, and requests in flight
        finish on the old worker object. The cost does not grow with the number of workers:
        it reads the named workers' rows (and, in a process that has not loaded everything,
        the crypto workers they use), and touches no other worker (``tests/test_growth.py``
        counts it). ``generation``: the generation the caller just bumped to; when it is exactly
        one ahead of this runtime (or ``caught_up``: the caller knows these workers are all the
        generations in between changed), this runtime is then current and the reload poller
        skips a full ``load()``. ``configs``: the configurations of (some of) these workers as the
        caller has just written them (:func:`~signpeer_core.administration.publish`); the others
        are read. A loaded worker whose configuration differs from the loaded one only in
        :data:`UNBUILT_PROPERTIES` (a renewal's ``nextkey``) is not rebuilt: a copy of it with the
        new configuration takes its place (nothing a build makes depends on those properties). From
        ``configs`` that is all: the token is the one this process's caller has just used. Read
        from the store while catching up (``caught_up``: another process's change, e.g. its
        ``nextkey`` with ``serve --workers N``), the worker must hold its own token and the token
        must stay for the new configuration (:meth:`CryptoToken.same_configuration`, which makes a
        soft token re-read its keystore and so see the new key, as a build would), and the copy
        resolves its key and chain again (:meth:`Worker.refresh`); otherwise the worker is built.
        A reload asked for in this process (``reload <worker>``, no ``configs``) always builds.
        """
        store = self.services.store
        collector.thaw()  # the workers replaced here may hold reference cycles (collector.py)
        with self._lock:
            changed = set(worker_ids)
            refs = self._token_refs()
            index = self._ids_by_name()
            copies: dict[int, Worker] = {}
            for wid in list(changed):
                old = self._configs.get(wid)
                known = (configs or {}).get(wid)
                loaded = self.by_id.get(wid)
                if known is not None:
                    new: WorkerConfig | None = known
                else:
                    props = store.worker_properties(wid)
                    new = WorkerConfig(wid, props) if props else None
                if old is not None and new is not None and loaded is not None and only_unbuilt_changes(old, new) \
                        and (known is not None or (caught_up and self._token_follows(wid, new))):
                    copy = loaded.with_config(new)
                    if known is None:
                        # Another process's changes, perhaps several caught up at once (a certificate
                        # imported into the token and ``reload <worker>``, then a nextkey): what the
                        # worker resolved from its token (key, chain) is resolved again, as a build would.
                        copy.refresh()
                    copies[wid] = copy
                    self._configs[wid] = new
                    changed.discard(wid)
                    continue
                if new is not None:
                    self._configs[wid] = new
                else:
                    self._configs.pop(wid, None)
                self._index_config(wid, old, new, refs, index)
            names = {str(w) for w in changed} | {self._configs[w].name.lower() for w in changed if w in self._configs}
            for name in names:  # workers that use a changed worker's token get the new one too
                changed |= refs.get(name, set())
            for wid in changed & copies.keys():  # back for the new token of another: built, not copied
                del copies[wid]
            self._old_tokens = {wid: self._tokens.pop(wid) for wid in changed if wid in self._tokens}
            self._note_token_changes(changed | copies.keys())
            kept = dict(self._old_tokens)
            for wid in changed:
                self._token_errors.pop(wid, None)
            self._loading = {}
            self._rebuilding = changed
            try:
                removed = [wid for wid in changed if wid not in self._configs]
                for wid in sorted(changed - set(removed)):
                    self._build(wid)
            finally:
                self._rebuilding = None
            replaced = {**self._loading, **copies}
            if not removed and len(replaced) == 1 and self._replace_in_place(*replaced.popitem()):
                self._finish_reload(generation, caught_up, kept)
                return
            # Copies at C speed (no per-worker Python work), so that readers never see a half-made map.
            by_id, by_name = dict(self.by_id), dict(self.by_name)
            for wid in removed:
                gone = by_id.pop(wid, None)
                if gone is not None and by_name.get(gone.name.lower()) is gone:
                    del by_name[gone.name.lower()]
            for wid, worker in self._loading.items():  # the rebuilt ones, and crypto workers loaded for them
                previous = by_id.get(wid)
                if previous is not None and by_name.get(previous.name.lower()) is previous:
                    del by_name[previous.name.lower()]
                by_id[wid] = worker
                holder = by_name.get(worker.name.lower())
                if holder is None or holder.id <= wid:  # as load(): the highest id holds a shared name
                    by_name[worker.name.lower()] = worker
            for wid, worker in copies.items():  # the same name, the same token: in place of the loaded one
                if by_name.get(worker.name.lower()) is by_id.get(wid):
                    by_name[worker.name.lower()] = worker
                by_id[wid] = worker
            came_or_went = len(by_id) != len(self.by_id) or bool(removed)
            self.by_id = by_id
            self.by_name = by_name
            self.replacements += 1
            if came_or_went:
                self._ids = None  # the id order is made again on next use (after by_id is the new one)
            self._finish_reload(generation, caught_up, kept)

    def _replace_in_place(self, wid: int, worker: Worker) -> bool:
        """Put ``worker`` in place of the loaded worker of its id and name, in the maps readers
        use, when it is the only worker a reload replaces and it neither comes, goes nor changes
        its name (a renewal's ``nextkey`` and install, ``reload <one>``); False, and nothing done,
        otherwise. One entry's replacement is atomic for a reader and leaves the maps' sizes (and
        so the id order, and any iteration in progress) as they were, so the maps are not copied:
        a copy costs in proportion to every loaded worker (about 1.5 ms a reload at 10,000 workers:
        ``docs/performance.md``, round 14; ``tests/test_growth.py`` pins both paths)."""
        previous = self.by_id.get(wid)
        name = worker.name.lower()
        if previous is None or previous.name.lower() != name or self.by_name.get(name) is not previous:
            return False
        self.by_id[wid] = worker
        self.by_name[name] = worker
        self.replacements += 1
        return True

    def _finish_reload(self, generation: int | None, caught_up: bool, kept: dict[int, CryptoToken]) -> None:
        """The end of :meth:`reload_workers` once the maps hold the new workers: the tokens the
        new build did not keep are closed (no worker the maps hand out uses them any more), the
        generation, and what another process activated for the new token instances."""
        self._close_replaced_tokens()
        if self.complete and generation is not None and (caught_up or generation == self.generation + 1):
            self.generation = generation
        self._old_tokens = {}
        # New token instances start inactive: give them what was activated through another
        # process. Tokens kept as they were need nothing (the poller applies activations
        # published meanwhile), so a renewal's rebuild reads no activation rows.
        fresh = any(wid in self._tokens and self._tokens[wid] is not kept.get(wid) for wid in self._loading)
        self._loading = {}
        if fresh:
            self.services.activation.apply()

    def _token_follows(self, wid: int, config: WorkerConfig) -> bool:
        """Whether the worker's own token, kept for ``config``, now sees what another process
        changed (:meth:`CryptoToken.same_configuration`: a soft token re-reads its keystore, as a
        build would make it do); False when the worker has no own token or the token is not kept."""
        token = self._tokens.get(wid)
        return token is not None and token.same_configuration(config)

    def _index_config(self, wid: int, old: WorkerConfig | None, new: WorkerConfig | None,
                      refs: dict[str, set[int]], index: dict[str, int]) -> None:
        """Keep the ``CRYPTOTOKEN`` and name indexes true after one worker's configuration changed."""
        old_ref = old.get_str("CRYPTOTOKEN").lower() if old else ""
        new_ref = new.get_str("CRYPTOTOKEN").lower() if new else ""
        if old_ref != new_ref:
            if old_ref:
                refs.get(old_ref, set()).discard(wid)
            if new_ref:
                refs.setdefault(new_ref, set()).add(wid)
        old_name = old.name.lower() if old else None
        new_name = new.name.lower() if new else None
        if old_name != new_name:
            if old_name is not None and index.get(old_name) == wid:
                self._name_index = None  # another worker may share the old name: rebuild on next use
            elif new_name is not None and index.get(new_name, wid + 1) > wid:  # the lowest id wins
                index[new_name] = wid

    @property
    def lock(self) -> threading.RLock:
        """Held while workers are rebuilt; take it before the activation relay's lock."""
        return self._lock

    def own_token(self, worker_id: int) -> CryptoToken | None:
        """The token a worker holds itself (``CRYPTOTOKEN_IMPLEMENTATION_CLASS``), if loaded."""
        return self._tokens.get(worker_id)

    def active_token_owners(self, among: Iterable[int] | None = None) -> list[int]:
        """The ids of the workers whose own token is active in this process (memory only);
        ``among``: only those of these ids (without it, every token is asked)."""
        if among is None:
            tokens = list(self._tokens.items())
        else:
            tokens = [(wid, token) for wid in among if (token := self._tokens.get(wid)) is not None]
        return sorted(wid for wid, token in tokens if token.is_active)

    def _note_token_changes(self, worker_ids: Iterable[int]) -> None:
        if self._token_changes is not None:
            self._token_changes.update(worker_ids)

    def take_token_changes(self) -> set[int] | None:
        """The workers whose own token this runtime built, replaced or (de)activated through
        :meth:`refresh_token_users` since the last call (None: any may have, after a full
        :meth:`load`), and start counting again. For the one caller that keeps a report of the
        active tokens current without asking every token (:class:`~signpeer_core.membership.Membership`);
        a token whose state changes by itself (a lost HSM session) is not in it. Call it holding
        :attr:`lock`, with what it returns checked under the same hold."""
        with self._lock:
            changes, self._token_changes = self._token_changes, set()
            return changes

    def give_back_token_changes(self, changes: set[int] | None) -> None:
        """Put back what :meth:`take_token_changes` returned when asking those tokens failed, so
        that the next call returns them again (with any noted since; None stays "any may have")."""
        with self._lock:
            if changes is None:
                self._token_changes = None
            elif self._token_changes is not None:
                self._token_changes |= changes

    def refresh_token_users(self, owner_id: int) -> None:
        """Signers resolve key and chain against an active token: re-resolve those using
        ``owner_id``'s token after it was activated, without a reload."""
        with self._lock:
            self._note_token_changes((owner_id,))
        owner = self.by_id.get(owner_id)
        if owner is None:
            return
        refs = self._token_refs()  # the token's users, not every worker
        users = {owner_id} | refs.get(owner.name.lower(), set()) | refs.get(str(owner_id), set())
        for wid in sorted(users):
            w = self.by_id.get(wid)
            if w is not None and (w.token_owner or w.name) == owner.name:
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
        refs = self._refs
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
        index = self._name_index
        if index is None:
            index = {}
            for wid in sorted(self._configs, reverse=True):  # the lowest id wins a duplicated name
                index[self._configs[wid].name.lower()] = wid
            self._name_index = index
        return index

    def _build(self, wid: int) -> Worker:
        if wid in self._loading:
            return self._loading[wid]
        rebuilding = self._rebuilding
        if rebuilding is not None and wid not in rebuilding and wid in self.by_id:
            return self.by_id[wid]  # a partial rebuild keeps the workers it was not asked to rebuild
        if wid not in self._configs:  # a process that loads only what it needs: the crypto worker
            props = self.services.store.worker_properties(wid)
            if not props:
                raise UnknownWorkerError(f"no worker {wid}")
            self._configs[wid] = WorkerConfig(wid, props)
            self._index_config(wid, None, self._configs[wid], self._token_refs(), self._ids_by_name())
        config = self._configs[wid]
        self.builds += 1
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
        if target_id is None and not self.complete:  # not loaded here: one indexed read
            store = self.services.store
            target_id = store.worker_id_by_name(ref)
            ref_id = worker_id_of(ref)
            if target_id is None and ref_id is not None and store.worker_properties(ref_id):
                target_id = ref_id
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

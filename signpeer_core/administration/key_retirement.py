"""Retiring superseded keys: renewal must not leave every old key in the token forever.

When a certificate install promotes ``NEXTCERTSIGNKEY`` to ``DEFAULTKEY`` (KEYSELECTED), the key
that was ``DEFAULTKEY`` is superseded: its alias and the time are added to the worker property
``SUPERSEDEDKEYS`` (``alias@epoch-seconds`` entries, ``;``-separated, maintained by signpeer).
What happens to it is the administrator's choice, per worker, next to SignServer's own key limits
(``KEYGENERATIONLIMIT``, ``KEYUSAGELIMIT``):

* ``SUPERSEDEDKEYS_GRACEPERIOD``: seconds a superseded key is kept (signatures made just before a
  renewal may still need it to be checked against, clients may be slow to switch);
* ``SUPERSEDEDKEYS_KEEP``: how many of the newest superseded keys are always kept.

With neither set nothing is ever removed (the behaviour before retirement existed). With one or
both set, a superseded key is removed from the token once it is past the grace period AND not
among the newest ``KEEP``. A key that any worker on the same token names as ``DEFAULTKEY`` or
``NEXTCERTSIGNKEY`` is never removed, and a key signpeer did not record as superseded is never
touched. Each removal is a KEYREMOVE audit record with the reason. Retirement runs after each
certificate install, after ``nextkey``, and with ``signpeer retirekeys <worker>``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from signpeer_core.administration.worker_properties import WorkerProperties
from signpeer_core.audit import KEY_MANAGEMENT
from signpeer_core.config import WorkerConfig
from signpeer_core.errors import BadRequestError, KeyNotFoundError, SignpeerError

log = logging.getLogger("signpeer.admin")

SUPERSEDED = "SUPERSEDEDKEYS"
GRACE = "SUPERSEDEDKEYS_GRACEPERIOD"
KEEP = "SUPERSEDEDKEYS_KEEP"


@dataclass(frozen=True)
class Superseded:
    alias: str
    since: float


def parse_superseded(value: str | None) -> list[Superseded]:
    """The entries of ``SUPERSEDEDKEYS``; malformed ones are skipped (never a reason to remove)."""
    entries = []
    for part in (value or "").split(";"):
        alias, sep, when = part.strip().rpartition("@")
        try:
            since = float(when)
        except ValueError:
            continue
        if sep and alias:
            entries.append(Superseded(alias, since))
    return entries


def format_superseded(entries: list[Superseded]) -> str:
    return ";".join(f"{e.alias}@{e.since:.0f}" for e in entries)


def with_superseded(value: str | None, alias: str, now: float) -> str:
    """``SUPERSEDEDKEYS`` with ``alias`` added (or its time renewed)."""
    entries = [e for e in parse_superseded(value) if e.alias.lower() != alias.lower()]
    return format_superseded([*entries, Superseded(alias, now)])


def _number(config: WorkerConfig, key: str) -> float | None:
    raw = config.get_str(key)
    if not raw:
        return None
    try:
        number = float(raw)
    except ValueError:
        number = -1
    if number < 0 or number != number:
        raise BadRequestError(f"{key} must be a number of {'seconds' if key == GRACE else 'keys'} (0 or more), "
                              f"not '{raw}'")
    return number


def due(entries: list[Superseded], now: float, grace: float | None, keep: float | None) -> list[Superseded]:
    """The superseded keys to retire under the policy (none when no policy is set)."""
    if grace is None and keep is None:
        return []
    # Newest first; entries are recorded in the order keys were superseded, which breaks ties
    # of one second (the recorded precision).
    newest_first = [e for _, e in sorted(enumerate(entries), key=lambda p: (p[1].since, p[0]), reverse=True)]
    return [e for i, e in enumerate(newest_first)
            if (keep is None or i >= keep) and (grace is None or now - e.since >= grace)]


class KeyRetirement(WorkerProperties):
    """The key retirement of :class:`~signpeer_core.admin.WorkerAdmin`."""

    def _keys_in_use(self, token_name: str) -> set[str]:
        """Aliases that a worker on this token signs with or renews to (lower case)."""
        in_use: set[str] = set()
        # The token's users only (indexed reads): its own worker and those naming it in CRYPTOTOKEN.
        users = set(self.store.worker_ids_with("CRYPTOTOKEN", token_name))
        users.update(self.store.worker_ids_with("NAME", token_name))
        for wid in sorted(users):
            props = self.store.worker_properties(wid)
            owner = props.get("CRYPTOTOKEN") or props.get("NAME", "")
            if owner.lower() == token_name.lower():
                in_use.update(props[k].lower() for k in ("DEFAULTKEY", "NEXTCERTSIGNKEY") if props.get(k))
        return in_use

    def retire_superseded_keys(self, worker_id: int, now: float | None = None) -> list[str]:
        """Remove the superseded keys the worker's policy retires; the aliases removed."""
        config = self.resolve(worker_id)
        entries = parse_superseded(config.get_str(SUPERSEDED))
        if not entries:
            return []
        now = time.time() if now is None else now
        retire = due(entries, now, _number(config, GRACE), _number(config, KEEP))
        if not retire:
            return []
        worker, token = self.token(config)
        token_name = self.token_name(worker)
        in_use = self._keys_in_use(token_name)
        removed, gone, events = [], set(), []
        for entry in retire:
            if entry.alias.lower() in in_use:
                gone.add(entry.alias)  # back in use (e.g. set as DEFAULTKEY again): no longer superseded
                continue
            try:
                token.remove_key(entry.alias)
            except KeyNotFoundError:
                gone.add(entry.alias)
                continue
            except SignpeerError as exc:
                log.warning("worker %s: cannot retire superseded key %s: %s", worker.name, entry.alias, exc.message)
                continue
            removed.append(entry.alias)
            gone.add(entry.alias)
            since = dt.datetime.fromtimestamp(entry.since, dt.UTC).isoformat(timespec="seconds")
            events.append(self.event("KEYREMOVE", KEY_MANAGEMENT, worker.id, {
                "KEYALIAS": entry.alias, "CRYPTOTOKEN": token_name, "SUCCESS": "true",
                "REASON": f"superseded since {since}; retired by {GRACE}={config.get_str(GRACE) or '-'}, "
                          f"{KEEP}={config.get_str(KEEP) or '-'}"}))
        if gone:
            left = [e for e in entries if e.alias not in gone]
            sets = {SUPERSEDED: format_superseded(left)} if left else {}
            change = self.worker_change(config, sets, [] if left else [SUPERSEDED], extra_audit=events)
            self.apply(change)  # bookkeeping: signing does not read SUPERSEDEDKEYS, nothing to reload
        return removed

    def retire_after_renewal(self, config: WorkerConfig) -> None:
        """Retirement as a renewal step's epilogue (``config``: the worker as the step found it;
        no policy, no work). A failure is logged, never the step's failure."""
        if not (config.get_str(GRACE) or config.get_str(KEEP)):
            return
        try:
            self.retire_superseded_keys(config.worker_id)
        except SignpeerError as exc:
            log.warning("worker %s: retiring superseded keys failed: %s", config.worker_id, exc.message)


__all__ = ["GRACE", "KEEP", "SUPERSEDED", "KeyRetirement", "due", "parse_superseded", "with_superseded"]

"""A server process as a member of the installation: registered, following changes, reporting them.

Every process of ``signpeer serve``, on every node sharing the database:

* registers in the node registry (:mod:`signpeer_core.storage.nodes`) when it starts and
  removes its row when it stops;
* follows changes *pushed* to it: it listens on the ``config_generation`` and
  ``activation_generation`` channels (PostgreSQL ``LISTEN/NOTIFY``; loopback datagrams on
  SQLite, :mod:`signpeer_core.storage.notifications`) and, when woken, rebuilds its workers
  (:func:`~signpeer_core.administration.publishing.reload_if_behind`) or applies published token
  activations. It also looks on a slow timer (``reload_poll_interval``, at most every
  :data:`~signpeer_core.storage.nodes.HEARTBEAT` seconds), in case a notification was lost;
* reports what it has applied (generation, activation generation, active tokens) in its row
  and notifies ``applied``, which is what :func:`wait_applied` (``signpeer reload``) waits for;
  between changes it refreshes ``last_seen`` every heartbeat.

A database that goes away while serving does not stop signing (workers are in memory); the
steps fail with one warning per outage and resume when the database is back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from signpeer_core.administration.publishing import reload_if_behind
from signpeer_core.errors import ServiceUnavailableError
from signpeer_core.storage.generations import ACTIVATION, CONFIG
from signpeer_core.storage.nodes import APPLIED, HEARTBEAT, NodeProcess

if TYPE_CHECKING:
    from signpeer_core.services import Services
    from signpeer_core.storage.database import Database
    from signpeer_core.storage.nodes import NodeRegistry

log = logging.getLogger("signpeer.server")


class Membership:
    """This process's row in the node registry, and the steps that keep it true."""

    def __init__(self, services: Services, address: str) -> None:
        self.services = services
        self.address = address
        settings = services.settings
        self.process = f"{settings.node_id}:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._reported: tuple[int, int, tuple[int, ...]] | None = None
        self._last_beat = 0.0
        self._failing = False
        #: The active tokens as last reported, when every token was last asked (monotonic), and the
        #: activation generation then: see :meth:`_state`.
        self._active: set[int] | None = None
        #: ``_active`` sorted, as reported: the same tuple object while the set is unchanged, so
        #: that a step compares and writes it without sorting or joining every token's id again.
        self._active_ids: tuple[int, ...] = ()
        self._asked_all = 0.0
        self._asked_activation = -1

    @property
    def interval(self) -> float:
        """The slow timer of :func:`follow_changes`: a step at least this often."""
        return min(max(0.05, self.services.settings.reload_poll_interval), HEARTBEAT)

    @property
    def registry(self) -> NodeRegistry:
        return self.services.store.nodes

    def _state(self) -> tuple[int, int, tuple[int, ...]]:
        """(generation, activation generation, active tokens) as applied in this process.

        Every token is asked whether it is active after a full load, after an activation or
        deactivation (the activation generation moved) and at least every :attr:`interval` (a token
        can change by itself, e.g. a lost HSM session, as before between two steps); in between
        (a renewal's publishes, one worker each) only the tokens the runtime rebuilt, replaced or
        activated since the last step are asked: a step after a one-worker change does not ask
        every worker's token. When asking fails (a token's ``is_active`` raises), the changes are
        given back to the runtime: the next step asks those tokens again."""
        runtime = self.services.runtime
        with runtime.lock:
            changes = runtime.take_token_changes()
            activation = self.services.activation.applied_generation
            now = time.monotonic()
            try:
                if changes is None or self._active is None or activation != self._asked_activation \
                        or now - self._asked_all >= self.interval:
                    active: set[int] | None = set(runtime.active_token_owners())
                    self._asked_all, self._asked_activation = now, activation
                else:
                    # Only the changed tokens are asked; the report is made again only when one of
                    # them moved in or out (a renewal's steps: none did), not per step.
                    now_active = set(runtime.active_token_owners(changes))
                    known = self._active
                    moved = any((wid in now_active) != (wid in known) for wid in changes)
                    active = (known - changes) | now_active if moved else None
            except BaseException:
                runtime.give_back_token_changes(changes)
                raise
            if active is not None and active != self._active:
                self._active, self._active_ids = active, tuple(sorted(active))
            return runtime.generation, activation, self._active_ids

    def register(self) -> None:
        generation, activation, tokens = state = self._state()
        self.registry.register(self.process, self.services.settings.node_id, self.address, generation, activation,
                               tokens)
        self._reported, self._last_beat = state, time.monotonic()

    def join(self) -> None:
        """Register at start. A database that cannot take the row (read-only, unreachable) does
        not stop the server: it signs with its workers, and the steps register it once they can;
        until then ``signpeer reload`` does not wait for it."""
        try:
            self.register()
        except ServiceUnavailableError as exc:
            log.warning("%s; this process is not in the node registry yet (signpeer reload will not wait for it)",
                        exc.message)
            self._failing = True

    def step(self) -> None:
        """Apply what changed (generation, activations), then report it or beat (a thread's work)."""
        services = self.services
        store, relay = services.store, services.activation
        try:
            if not reload_if_behind(services) and relay.enabled \
                    and store.activation_generation() != relay.applied_generation:
                relay.apply()  # (after a reload: at the next step)
            state = self._state()
            now = time.monotonic()
            if state != self._reported:
                generation, activation, tokens = state
                if not self.registry.applied(self.process, generation, activation, tokens):
                    self.register()
                self._reported, self._last_beat = state, now
            elif now - self._last_beat >= HEARTBEAT:
                if not self.registry.seen(self.process):  # pruned while we were cut off
                    self.register()
                self._last_beat = now
            if self._failing:
                log.info("the database is reachable again: configuration changes are followed again")
                self._failing = False
        except ServiceUnavailableError as exc:
            if not self._failing:
                log.warning("%s; signing with the loaded workers continues, changes wait until it is back",
                            exc.message)
            self._failing = True

    def leave(self) -> None:
        try:
            self.registry.remove(self.process)
        except Exception as exc:  # stopping must not fail because the database is gone
            log.warning("could not remove this process from the node registry: %s", exc)


#: The shortest time between the starts of two steps woken by notifications. A change woken alone
#: is followed at once; a burst of them (a peer's ``renew-all``: two published changes per renewal,
#: hundreds a second) is followed and reported in one step every ``STEP_SPACING`` seconds, not one
#: step (a catch-up, a report, a thread's turn) per change, in every process. ``signpeer reload``
#: waits at most this much longer during such a burst.
STEP_SPACING = 0.02


async def follow_changes(services: Services, membership: Membership) -> None:
    """The lifespan task of a server process: wake on notifications (or the slow timer), step;
    woken again within :data:`STEP_SPACING` of the last step, first let that time pass, so that
    the notifications arriving meanwhile are followed by the same step."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def poke(payload: str | None) -> None:
        loop.call_soon_threadsafe(wake.set)

    database = services.store.database
    stops = [database.listen(CONFIG, poke), database.listen(ACTIVATION, poke)]
    interval = membership.interval
    last_step = -math.inf  # the start of the last step woken by a notification
    try:
        while True:
            with anyio.move_on_after(interval):
                await wake.wait()
            if wake.is_set():
                early = last_step + STEP_SPACING - loop.time()
                if early > 0:
                    await anyio.sleep(early)  # a poke meanwhile is followed by the step below
                last_step = loop.time()
            wake.clear()  # a poke from here on sets it again: the next pass steps again
            try:
                await anyio.to_thread.run_sync(membership.step)
            except Exception:  # a failed step must not stop the next ones
                log.exception("following configuration changes failed; trying again in %s s", interval)
    finally:
        for stop in stops:
            stop()


@dataclass
class Waited:
    """What :func:`wait_applied` found: the live processes, and those still behind."""

    live: list[NodeProcess]
    behind: list[NodeProcess]
    seconds: float


def wait_applied(database: Database, registry: NodeRegistry, generation: int, timeout: float) -> Waited:
    """Until every live server process of every node has applied ``generation`` (or ``timeout``).

    Woken by the ``applied`` notifications of the processes; the registry is read again on
    each, and every half second in case one was lost.
    """
    started = time.monotonic()
    woken = threading.Event()
    stop = database.listen(APPLIED, lambda payload: woken.set())
    try:
        database.listener_ready(timeout)  # listening before the first read: nothing slips between
        deadline = started + timeout
        while True:
            woken.clear()
            live = registry.live()
            behind = [p for p in live if p.generation < generation]
            left = deadline - time.monotonic()
            if not behind or left <= 0:
                return Waited(live, behind, time.monotonic() - started)
            woken.wait(min(left, 0.5))
    finally:
        stop()

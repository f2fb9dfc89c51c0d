"""How a server process follows the changes other processes publish (``follow_changes``).

A change that arrives alone is followed at once; a burst of them (a peer's ``renew-all`` publishes
two per renewal) is followed in one step per ``STEP_SPACING``, not one step per change, and the
last change of the burst is always followed. Real parts: two ``Services`` on one SQLite store (as
two processes of ``serve --workers 2``), the loopback notifications between them, the event loop.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

import signpeer_core.membership as membership_module
from signpeer_core.administration import Change, publish
from signpeer_core.membership import Membership, follow_changes
from signpeer_core.services import Services
from signpeer_core.settings import load_settings
from signpeer_core.storage.generations import CONFIG
from signpeer_core.testing import PKI, add_signer, wait_until


@pytest.fixture
def two_processes(home: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Services, Services, int]]:
    """(publisher, follower, worker id): two processes' services on one store, workers loaded. The
    slow timer is off: a change the follower follows reached it as a notification."""
    monkeypatch.setattr(Membership, "interval", property(lambda self: 3600.0))
    settings = replace(load_settings(home), activation_secret=secrets.token_hex(32))
    publisher = Services.open(settings)
    follower = Services.open(settings)
    try:
        wid = add_signer(publisher, pki, "Followed", AUTHTYPE="NOAUTH")
        publisher.runtime.load()
        follower.runtime.load()
        yield publisher, follower, wid
    finally:
        follower.close()
        publisher.close()


def _follow(follower: Services, scenario: Callable[[Membership, list[float], asyncio.AbstractEventLoop], None]
            ) -> list[float]:
    """Run ``follow_changes`` for ``follower`` while ``scenario(membership, steps, loop)`` runs in
    a thread; the start time of every step, in order."""
    membership = Membership(follower, "127.0.0.1:0")
    membership.register()
    steps: list[float] = []
    step = membership.step

    def counted() -> None:
        steps.append(time.monotonic())
        step()

    membership.step = counted  # type: ignore[method-assign]

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow_changes, follower, membership)
            assert await anyio.to_thread.run_sync(follower.store.database.listener_ready)
            await anyio.to_thread.run_sync(scenario, membership, steps, asyncio.get_running_loop())
            tg.cancel_scope.cancel()

    anyio.run(main)
    return steps


def _applied(services: Services, membership: Membership) -> int:
    row = next(p for p in services.store.nodes.processes() if p.process == membership.process)
    return row.generation


def _caught_up(publisher: Services, follower: Services, membership: Membership) -> None:
    """Until the follower has loaded and reported the publisher's last generation (30 s at most)."""
    last = publisher.store.config_generation()
    wait_until(lambda: follower.runtime.generation == last and _applied(follower, membership) == last,
               timeout=30, what=f"the follower at generation {last}", interval=0.01)


def test_a_burst_of_changes_is_followed_in_one_step_per_spacing_and_completely(
        two_processes: tuple[Services, Services, int], monkeypatch: pytest.MonkeyPatch) -> None:
    publisher, follower, wid = two_processes
    monkeypatch.setattr(membership_module, "STEP_SPACING", 0.25)
    changes = 40
    seen: dict[str, Any] = {}

    def burst(membership: Membership, steps: list[float], loop: asyncio.AbstractEventLoop) -> None:
        steps.clear()
        started = time.monotonic()
        for i in range(changes):  # each one notifies the follower
            publish(publisher, Change().worker(wid, {"DESCRIPTION": f"change {i}"}), [wid])
        _caught_up(publisher, follower, membership)
        seen["seconds"] = time.monotonic() - started

    steps = _follow(follower, burst)
    assert follower.runtime.by_id[wid].config.get("DESCRIPTION") == f"change {changes - 1}"
    # Every step after the first waited for the spacing: at most one per 0.25 s of the burst,
    # where one per notification would be up to 40.
    assert 1 <= len(steps) <= seen["seconds"] / 0.25 + 2, (len(steps), seen)
    # (Timed in the step's thread, after the hand-off to it: a loose bound; unspaced steps come ms apart.)
    assert all(b - a >= 0.15 for a, b in zip(steps, steps[1:], strict=False)), steps


def test_a_change_that_comes_alone_is_followed_at_once(
        two_processes: tuple[Services, Services, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """A long spacing, and still the single change is followed within the test's patience: only
    a step that comes soon after another waits."""
    publisher, follower, wid = two_processes
    monkeypatch.setattr(membership_module, "STEP_SPACING", 60.0)
    done = threading.Event()

    def one(membership: Membership, steps: list[float], loop: asyncio.AbstractEventLoop) -> None:
        publish(publisher, Change().worker(wid, {"DESCRIPTION": "alone"}), [wid])
        _caught_up(publisher, follower, membership)
        done.set()

    _follow(follower, one)
    assert done.is_set()
    assert follower.runtime.by_id[wid].config.get("DESCRIPTION") == "alone"


def test_a_change_published_during_a_step_is_followed_by_another_step(
        two_processes: tuple[Services, Services, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """The notification of a change that comes while the follower is stepping (its generation
    already read) is not lost with the one the step took: the next pass steps again."""
    publisher, follower, wid = two_processes
    monkeypatch.setattr(membership_module, "STEP_SPACING", 0.05)
    in_step, go_on = threading.Event(), threading.Event()
    plain = Membership.step

    def held_once(self: Membership) -> None:
        plain(self)
        if not in_step.is_set():
            in_step.set()
            assert go_on.wait(30)

    monkeypatch.setattr(Membership, "step", held_once)

    def during(membership: Membership, steps: list[float], loop: asyncio.AbstractEventLoop) -> None:
        # The follower's notifications as its event loop runs them: after follow_changes' own
        # poke for the same notification (registered first; the loop runs its callbacks in order).
        heard: list[str | None] = []
        stop = follower.store.database.listen(CONFIG, lambda payload: loop.call_soon_threadsafe(heard.append, payload))
        try:
            publish(publisher, Change().worker(wid, {"DESCRIPTION": "first"}), [wid])
            assert in_step.wait(30)  # the first step has followed "first" and is still running
            second = publish(publisher, Change().worker(wid, {"DESCRIPTION": "second"}), [wid])
            wait_until(lambda: str(second) in heard, timeout=30, what="the second notification", interval=0.01)
            go_on.set()  # the step ends after the poke of "second" reached follow_changes
            _caught_up(publisher, follower, membership)
        finally:
            stop()

    steps = _follow(follower, during)
    assert follower.runtime.by_id[wid].config.get("DESCRIPTION") == "second"
    assert len(steps) >= 2

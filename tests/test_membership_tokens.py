"""What a server process reports of its active tokens (``Membership``), and what a step asks for it.

A step after a change that concerns one worker (a renewal's ``nextkey`` or install, published in
this process or another) asks only the tokens the runtime rebuilt, replaced or activated, not every
worker's; every token is asked after an activation or deactivation and at least every interval, so
the node row stays true.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from signpeer_core.admin import WorkerAdmin
from signpeer_core.audit import Admin
from signpeer_core.membership import Membership
from signpeer_core.services import Services
from signpeer_core.settings import load_settings
from signpeer_core.testing import PASSWORD, PKI, MemoryCryptoToken, add_signer
from signpeer_core.testing.home import enable_test_plugin


@pytest.fixture
def server_services(home: Path) -> Iterator[Any]:
    """Services as a server process opens them (activations shared between processes)."""
    enable_test_plugin()
    s = Services.open(replace(load_settings(home), activation_secret=secrets.token_hex(32), reload_poll_interval=2.0))
    yield s
    s.close()


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The worker ids of the memory tokens asked whether they are active, in order."""
    ids: list[int] = []
    plain = MemoryCryptoToken.is_active

    def is_active(self: MemoryCryptoToken) -> bool:
        ids.append(self.worker_id)
        return bool(plain.fget(self))  # type: ignore[attr-defined]

    monkeypatch.setattr(MemoryCryptoToken, "is_active", property(is_active))
    return ids


def reported(services: Any, membership: Membership) -> set[int]:
    row = next(p for p in services.store.nodes.processes() if p.process == membership.process)
    return row.active_token_ids


def test_a_step_after_a_one_worker_change_asks_only_that_workers_token(server_services: Any, pki: PKI,
                                                                        asked: list[int]) -> None:
    services = server_services
    ids = [add_signer(services, pki, f"Member{i}", AUTHTYPE="NOAUTH") for i in range(6)]
    membership = Membership(services, "127.0.0.1:0")
    membership.register()
    assert reported(services, membership) == set(ids)
    admin = WorkerAdmin(services, Admin("tests"))
    # Two steps in a row within the interval (a step after it asks every token again, as it should):
    # tried again on a machine slow enough to let the interval pass between them.
    for _ in range(5):
        membership.step()  # asks every token after the load above (and takes its changes)
        started = time.monotonic()
        admin.next_key(ids[2], publish=True)
        asked.clear()
        membership.step()
        if time.monotonic() - started < membership.interval:
            break
    assert asked == [ids[2]]  # not every worker's token
    assert reported(services, membership) == set(ids)
    assert membership._reported is not None and membership._reported[0] == services.runtime.generation


def test_a_step_where_no_token_moved_neither_sorts_nor_joins_every_tokens_id(
        server_services: Any, pki: PKI, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report of active tokens (one id per worker) is made again only when a token moved in
    or out: a renewal's steps write the text they wrote before, instead of sorting and joining
    10,000 ids per step."""
    import signpeer_core.storage.nodes as nodes

    services = server_services
    ids = [add_signer(services, pki, f"Member{i}", AUTHTYPE="NOAUTH") for i in range(6)]
    membership = Membership(services, "127.0.0.1:0")
    membership.register()
    admin = WorkerAdmin(services, Admin("tests"))
    joined: list[tuple[int, ...]] = []
    plain = nodes._tokens
    monkeypatch.setattr(nodes, "_tokens", lambda given: joined.append(tuple(given)) or plain(given))
    membership.step()
    assert membership._reported is not None
    report = membership._reported[2]
    joined.clear()
    admin.next_key(ids[2], publish=True)
    membership.step()  # asks the one token (or, past the interval, all: the same set, the same report)
    assert membership._reported[0] == services.runtime.generation  # the step did report the new generation
    assert membership._reported[2] is report and joined == []  # with the tokens' text it had
    assert reported(services, membership) == set(ids)
    admin.deactivate(ids[4])  # a token that moves: the report is made again
    membership.step()
    assert reported(services, membership) == set(ids) - {ids[4]} and joined


def test_an_activation_change_is_reported_at_the_next_step(server_services: Any, pki: PKI) -> None:
    services = server_services
    ids = [add_signer(services, pki, f"Member{i}", AUTHTYPE="NOAUTH") for i in range(4)]
    membership = Membership(services, "127.0.0.1:0")
    membership.register()
    membership.step()
    admin = WorkerAdmin(services, Admin("tests"))
    admin.deactivate(ids[1])  # no publish of the worker: the activation generation tells
    membership.step()
    assert reported(services, membership) == set(ids) - {ids[1]}
    admin.activate(ids[1], PASSWORD)
    membership.step()
    assert reported(services, membership) == set(ids)


def test_a_token_that_changes_by_itself_is_reported_within_the_interval(home: Path, pki: PKI) -> None:
    enable_test_plugin()
    services = Services.open(replace(load_settings(home), activation_secret=secrets.token_hex(32),
                                     reload_poll_interval=0.05))
    try:
        ids = [add_signer(services, pki, f"Member{i}", AUTHTYPE="NOAUTH") for i in range(3)]
        membership = Membership(services, "127.0.0.1:0")
        membership.register()
        membership.step()
        services.runtime.get(ids[0]).token.deactivate()  # as a lost HSM session: nothing in the runtime sees it
        deadline = time.monotonic() + 30
        while reported(services, membership) != set(ids[1:]) and time.monotonic() < deadline:
            membership.step()
        assert reported(services, membership) == set(ids[1:])
    finally:
        services.close()


def test_a_token_that_fails_when_asked_is_asked_again_at_the_next_step(server_services: Any, pki: PKI,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A step whose asking fails (a token's ``is_active`` raises: an HSM that did not answer) loses
    none of the changes it took: the next step asks that token again and reports what it says now,
    not what was reported before the change."""
    services = server_services
    ids = [add_signer(services, pki, f"Member{i}", AUTHTYPE="NOAUTH") for i in range(6)]
    failing: set[int] = set()  # tokens that raise when next asked, then say they are inactive
    gone: set[int] = set()
    plain = MemoryCryptoToken.is_active

    def is_active(self: MemoryCryptoToken) -> bool:
        if self.worker_id in failing:
            failing.discard(self.worker_id)
            gone.add(self.worker_id)
            raise RuntimeError("the HSM did not answer")
        return self.worker_id not in gone and bool(plain.fget(self))  # type: ignore[attr-defined]

    monkeypatch.setattr(MemoryCryptoToken, "is_active", property(is_active))
    membership = Membership(services, "127.0.0.1:0")
    membership.register()
    admin = WorkerAdmin(services, Admin("tests"))
    # The failed step and the next within the interval (after it every token is asked anyway):
    # tried again, on another worker, on a machine slow enough to let the interval pass.
    for wid in ids[:5]:
        membership.step()
        started = time.monotonic()
        admin.next_key(wid, publish=True)  # a one-worker change: the next step asks only its token
        failing.add(wid)
        with pytest.raises(RuntimeError, match="did not answer") as failed:
            membership.step()
        assert "active_token_owners" in {entry.name for entry in failed.traceback}  # the report's asking failed
        membership.step()
        if time.monotonic() - started < membership.interval:
            break
    assert reported(services, membership) == set(ids) - gone

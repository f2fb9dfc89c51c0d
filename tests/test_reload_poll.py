"""The reload poller rebuilds every worker only for changes of other processes, never for a
publish of its own process that is between its commit and its own (one-worker) reload."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from signpeer_core.administration import Change, publish
from signpeer_core.administration.publishing import reload_if_behind
from signpeer_core.settings import load_settings
from signpeer_core.storage import open_store
from signpeer_core.testing import PKI, add_signer


@pytest.fixture
def full_loads(services: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    loads: list[int] = []
    load = services.runtime.load

    def counted() -> None:
        loads.append(1)
        load()

    monkeypatch.setattr(services.runtime, "load", counted)
    return loads


def test_poll_reloads_for_another_process_only(services: Any, pki: PKI, signpeer_home: Path,
                                               full_loads: list[int]) -> None:
    wid = add_signer(services, pki, "Signer1", AUTHTYPE="NOAUTH")
    services.runtime.load()
    full_loads.clear()
    assert not reload_if_behind(services)
    publish(services, Change().worker(wid, {"DESCRIPTION": "ours"}), [wid])  # reloads just that worker
    assert not reload_if_behind(services) and full_loads == []

    other = open_store(load_settings(signpeer_home).database)  # e.g. `signpeer reload` elsewhere
    try:
        other.bump_config_generation()
    finally:
        other.close()
    assert reload_if_behind(services) and full_loads == [1]
    assert services.runtime.generation == services.store.config_generation()


def test_poll_during_a_publish_of_this_process_waits_for_it(services: Any, pki: PKI,
                                                            full_loads: list[int],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    wid = add_signer(services, pki, "Signer1", AUTHTYPE="NOAUTH")
    services.runtime.load()
    full_loads.clear()
    committed, release = threading.Event(), threading.Event()
    reload_workers = services.runtime.reload_workers

    def held(worker_ids: list[int], generation: int | None = None, caught_up: bool = False,
             configs: Any = None) -> None:
        committed.set()  # the bump is in the database, the runtime has not caught up yet
        assert release.wait(30)
        reload_workers(worker_ids, generation, caught_up, configs)

    monkeypatch.setattr(services.runtime, "reload_workers", held)
    publisher = threading.Thread(target=publish, args=(services, Change().worker(wid, {"DESCRIPTION": "x"}), [wid]))
    publisher.start()
    assert committed.wait(30)
    # What the poller reads outside the lock: the database is ahead of this runtime.
    assert services.store.config_generation() == services.runtime.generation + 1
    polled: list[bool] = []
    poller = threading.Thread(target=lambda: polled.append(reload_if_behind(services)))
    poller.start()
    release.set()
    publisher.join(30)
    poller.join(30)
    assert polled == [False] and full_loads == []
    assert services.runtime.generation == services.store.config_generation()

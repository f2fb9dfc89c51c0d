"""A server process freezes what start-up loaded for the garbage collector (``collector.py``),
and freezing leaks nothing: a worker replaced by a reload is freed by its last reference, not by
a collection that would never visit it."""

from __future__ import annotations

import contextlib
import gc
import re
import weakref
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from signpeer_core import collector
from signpeer_core.testing import PKI, add_signer, client_context, wait_until

PROCESS = "/signserver/rest/v1/workers/{}/process"
FROZEN = re.compile(r"start-up's (\d+) objects frozen for the garbage collector")


@pytest.mark.parametrize("processes", [1, 2])
def test_each_server_process_freezes_start_up_then_serves(signpeer_home: Path, services, pki: PKI, start_server,
                                                           processes: int) -> None:
    add_signer(services, pki, "S", AUTHTYPE="NOAUTH")
    server = start_server(signpeer_home, *(("--workers", str(processes)) if processes > 1 else ()))
    wait_until(lambda: len(FROZEN.findall(server.log())) == processes, what=f"{processes} freeze log line(s)")
    # The core and the plugins alone are about 100,000 objects: the whole of start-up, not a part.
    assert all(int(n) > 50_000 for n in FROZEN.findall(server.log())), server.log()
    r = httpx.post(server.url + PROCESS.format("S"), json={"data": "x"}, verify=client_context(pki.ca_pem),
                   headers={"X-Keyfactor-Requested-With": "t"})
    assert r.status_code == 200, r.text
    assert server.stop() == 0


@contextlib.contextmanager
def frozen() -> Iterator[None]:
    """This test process frozen as a server's is, with the collector off: what is freed is freed
    by reference counting alone. Thawed afterwards (the rest of the suite runs as before)."""
    collector.freeze_startup()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def test_workers_replaced_after_the_freeze_are_freed_at_once(services, pki: PKI) -> None:
    ids = [add_signer(services, pki, f"W{i}", AUTHTYPE="NOAUTH") for i in range(3)]
    runtime = services.runtime
    runtime.load()
    gc.collect()
    with frozen():
        workers = {wid: weakref.ref(runtime.by_id[wid]) for wid in ids}
        tokens = {wid: weakref.ref(runtime.by_id[wid].token) for wid in ids}
        # One worker rebuilt (a property a build reads), then every one (reload all) after a token
        # property changed on another: their tokens are replaced too.
        services.store.update_worker(ids[0], {"DISABLED": "true"})
        runtime.reload_workers([ids[0]])
        assert workers[ids[0]]() is None, "a worker replaced by a one-worker reload is still alive"
        services.store.update_worker(ids[1], {"KEYSTOREPASSWORD": "changed"})
        runtime.load()
        assert [wid for wid in ids if workers[wid]() is not None] == [], "workers replaced by reload all are alive"
        assert tokens[ids[1]]() is None, "a token replaced by a reload is still alive"
        assert tokens[ids[2]]() is not None, "an unchanged token is kept by a reload"


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
    """This test process frozen as a server's is at the end of start-up; afterwards the
    collector's state is put back as it was (the rest of the suite runs as before)."""
    was_enabled, was_frozen = gc.isenabled(), gc.get_freeze_count()
    collector.freeze_startup()
    try:
        yield
    finally:
        collector.thaw()
        if was_frozen == 0:
            gc.unfreeze()
        (gc.enable if was_enabled else gc.disable)()


@pytest.mark.parametrize("reload", ["one", "all"])
def test_the_first_reload_thaws_so_replaced_workers_in_cycles_are_collected(services, pki: PKI,
                                                                           reload: str) -> None:
    """A worker loaded at start-up may sit in a reference cycle (a one-time worker and its token):
    frozen, it would never be collected once replaced. The first reload thaws start-up."""
    ids = [add_signer(services, pki, f"W{i}", AUTHTYPE="NOAUTH") for i in range(3)]
    runtime = services.runtime
    runtime.load()
    with frozen():
        assert gc.get_freeze_count() > 0
        old = runtime.by_id[ids[0]]
        old.cycle = old  # type: ignore[attr-defined]  # as a one-time worker and its token are
        replaced = weakref.ref(old)
        del old
        services.store.update_worker(ids[0], {"DISABLED": "true"})
        if reload == "one":
            runtime.reload_workers([ids[0]])
        else:
            runtime.load()
        assert gc.get_freeze_count() == 0, "a reload left start-up frozen"
        gc.collect()
        assert replaced() is None, "a replaced worker in a reference cycle was not collected"
        runtime.reload_workers([ids[1]])  # thawed once: later reloads have nothing to do
        assert gc.get_freeze_count() == 0

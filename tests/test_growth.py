"""Guards: an operation on one worker does not read or rebuild every worker.

These count (workers built by the runtime, reads of every worker's properties), they do not
time: a single-worker operation that starts scanning all workers fails here whatever the
machine's load. ``bench/bench_growth.py`` measures the curves (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from signpeer_core.admin import WorkerAdmin
from signpeer_core.administration.publishing import Change, publish, reload_if_behind
from signpeer_core.audit import Admin
from signpeer_core.services import Services
from signpeer_core.settings import load_settings
from signpeer_core.storage.generations import KEPT_SCOPES
from signpeer_core.testing import MEMORY_TOKEN, PASSWORD, open_services
from signpeer_core.testing.plugin import enable as enable_test_plugin

#: Enough workers that a scan shows in the counts, few enough to build quickly.
SIGNERS = 60


def _populate(services: Any) -> None:
    """One crypto worker and SIGNERS signers using its token (ids 2..SIGNERS+1)."""
    workers: dict[int, tuple[dict[str, str], list[str]]] = {
        1: ({"NAME": "SharedToken", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
             "CRYPTOTOKEN_IMPLEMENTATION_CLASS": MEMORY_TOKEN, "KEYSTOREPASSWORD": PASSWORD}, [])}
    for wid in range(2, SIGNERS + 2):
        workers[wid] = ({"NAME": f"Signer{wid}", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "PlainSigner",
                         "CRYPTOTOKEN": "SharedToken", "DEFAULTKEY": "k1", "AUTHTYPE": "NOAUTH"}, [])
    services.store.apply_changes(workers=workers)


class Counted:
    """Counts the reads of every worker's properties on a store (the scan these tests forbid)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: Any) -> None:
        self.scans = 0
        original = store.all_worker_properties

        def counted() -> dict[int, dict[str, str]]:
            self.scans += 1
            return original()

        monkeypatch.setattr(store, "all_worker_properties", counted)


@pytest.fixture
def grown(home: Path) -> Iterator[Path]:
    services = open_services(home)
    try:
        _populate(services)
    finally:
        services.close()
    yield home


def _cli_services(home: Path) -> Services:
    """Services as a CLI command opens them: the workers are not loaded."""
    enable_test_plugin()
    return Services.open(load_settings(home), load=False)


def test_reloading_one_worker_in_a_command_builds_that_worker_and_its_crypto_worker(
        grown: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    services = _cli_services(grown)
    try:
        counted = Counted(monkeypatch, services.store)
        admin = WorkerAdmin(services, Admin.cli())
        admin.reload("Signer30")
        runtime = services.runtime
        assert counted.scans == 0
        assert runtime.builds == 2  # Signer30 and SharedToken, whose token it uses
        assert sorted(runtime.by_id) == [1, 30]
        assert runtime.get("Signer30").token is runtime.get("SharedToken").token
        assert runtime.get("signer30").status().active is False  # no key k1: built for real, with its reasons
    finally:
        services.close()


def test_reading_and_setting_one_worker_by_name_reads_no_other_worker(
        grown: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    services = _cli_services(grown)
    try:
        counted = Counted(monkeypatch, services.store)
        admin = WorkerAdmin(services, Admin.cli())
        assert admin.worker_config("signer45").get_str("DEFAULTKEY") == "k1"
        admin.set_property("Signer45", "NAME", "Renamed45")  # the NAME check finds duplicates by index
        with pytest.raises(Exception, match="already named 'Signer46'"):
            admin.set_property("Renamed45", "NAME", "SIGNER46")
        admin.set_property(45, "DEFAULTKEY", "k2")
        assert admin.worker_id("RENAMED45") == 45
        assert counted.scans == 0
        assert services.runtime.builds == 0
    finally:
        services.close()


def test_a_token_user_in_a_command_is_loaded_alone(grown: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    services = _cli_services(grown)
    try:
        counted = Counted(monkeypatch, services.store)
        admin = WorkerAdmin(services, Admin.cli())
        worker, token = admin.token("Signer7", active=False)
        assert worker.token_owner == "SharedToken" and token is admin.token("SharedToken", active=False)[1]
        assert counted.scans == 0
        assert services.runtime.builds == 2
    finally:
        services.close()


def test_a_server_process_rebuilds_only_the_worker_another_process_reloaded(
        grown: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = open_services(grown)  # a server process: every worker loaded
    command = _cli_services(grown)  # the `signpeer setproperty` / `reload <one>` process
    try:
        assert server.runtime.builds == SIGNERS + 1
        kept = server.runtime.get("Signer9")
        counted = Counted(monkeypatch, server.store)
        admin = WorkerAdmin(command, Admin.cli())
        admin.set_property(20, "NAME", "Twenty")
        admin.reload(20)
        before = server.runtime.builds
        assert reload_if_behind(server)
        assert server.runtime.builds - before == 1
        assert counted.scans == 0
        assert server.runtime.generation == command.store.config_generation()
        assert server.runtime.get("twenty").id == 20
        with pytest.raises(Exception, match="no worker 'Signer20'"):
            server.runtime.get("Signer20")
        assert server.runtime.get("Signer9") is kept  # the others are the same objects
        assert not reload_if_behind(server)

        # Two one-worker reloads missed at once: both workers, still not the others.
        admin.reload(3)
        admin.reload(4)
        before = server.runtime.builds
        assert reload_if_behind(server)
        assert server.runtime.builds - before == 2

        # Reloading the crypto worker rebuilds it and every worker using its token.
        admin.reload("SharedToken")
        before = server.runtime.builds
        assert reload_if_behind(server)
        assert server.runtime.builds - before == SIGNERS + 1

        # `reload all` rebuilds everything (and reads every worker once).
        admin.reload("all")
        before, scans = server.runtime.builds, counted.scans
        assert reload_if_behind(server)
        assert server.runtime.builds - before == SIGNERS + 1
        assert counted.scans == scans + 1
    finally:
        command.close()
        server.close()


def test_a_one_worker_reload_replaces_it_in_the_maps_without_copying_them(grown: Path) -> None:
    """A reload that replaces one worker of the same name puts it in place in the maps readers
    use; copying them would cost in proportion to every loaded worker. Comings, goings,
    renames and reloads of several workers swap in new maps, whole."""
    server = open_services(grown)
    command = _cli_services(grown)
    try:
        runtime = server.runtime
        by_id, by_name, ids = runtime.by_id, runtime.by_name, runtime.ids()
        old, replacements = runtime.get("Signer9"), runtime.replacements
        admin = WorkerAdmin(command, Admin.cli())
        admin.reload(9)  # another process's `reload <one>`
        assert reload_if_behind(server)
        assert runtime.by_id is by_id and runtime.by_name is by_name and runtime.ids() is ids
        assert runtime.replacements == replacements + 1  # what caches of look-ups compare (directsigning.py)
        assert runtime.get("Signer9") is not old and runtime.by_name["signer9"] is runtime.by_id[9]
        # This process's own published change of one worker (a renewal's install), built or copied.
        for sets in ({"SOMETHING": "1"}, {"NEXTCERTSIGNKEY": "k2"}):
            before = runtime.get("Signer10")
            publish(server, Change(based_on={10: before.config}).worker(10, sets), [10])
            assert runtime.by_id is by_id and runtime.get("Signer10") is not before
            assert runtime.get("signer10").config.get_str(next(iter(sets))) == next(iter(sets.values()))

        admin.set_property(11, "NAME", "Eleven")  # a rename: new maps, the old name gone
        admin.reload(11)
        assert reload_if_behind(server)
        assert runtime.by_id is not by_id and runtime.get("eleven").id == 11 and "signer11" not in runtime.by_name
        by_id = runtime.by_id
        admin.remove_worker(12)  # a worker gone: new maps and a new id order
        publish(command, Change(), [12])
        assert reload_if_behind(server)
        assert runtime.by_id is not by_id and 12 not in runtime.by_id and 12 not in runtime.ids()
        by_id = runtime.by_id
        admin.reload("SharedToken")  # the crypto worker and every user of its token: new maps
        assert reload_if_behind(server)
        assert runtime.by_id is not by_id and runtime.get("Signer9").token is runtime.get("SharedToken").token
    finally:
        command.close()
        server.close()


def test_a_generation_of_unknown_scope_rebuilds_everything(grown: Path) -> None:
    server = open_services(grown)
    command = _cli_services(grown)
    try:
        admin = WorkerAdmin(command, Admin.cli())
        # A bump that does not say what it changed (an older signpeer, a global property).
        command.store.bump_config_generation()
        before = server.runtime.builds
        assert reload_if_behind(server)
        assert server.runtime.builds - before == SIGNERS + 1
        # A published global property reaches every worker.
        admin.set_global("GLOB", "SOMETHING", "1", publish=True)
        before = server.runtime.builds
        assert reload_if_behind(server)
        assert server.runtime.builds - before == SIGNERS + 1
        assert server.runtime.global_value("SOMETHING") == "1"
        # Further behind than the scopes remembered: everything.
        for _ in range(KEPT_SCOPES + 1):
            admin.reload(5)
        before = server.runtime.builds
        assert reload_if_behind(server)
        assert server.runtime.builds - before == SIGNERS + 1
    finally:
        command.close()
        server.close()


def test_removing_a_worker_elsewhere_removes_it_here_alone(grown: Path) -> None:
    server = open_services(grown)
    command = _cli_services(grown)
    try:
        admin = WorkerAdmin(command, Admin.cli())
        admin.remove_worker(33)
        publish(command, Change(), [33])  # as `reload 33` would, had the worker still existed
        before = server.runtime.builds
        assert reload_if_behind(server)
        assert server.runtime.builds == before
        assert 33 not in server.runtime.by_id
        with pytest.raises(Exception, match="no worker 'Signer33'"):
            server.runtime.get("Signer33")
    finally:
        command.close()
        server.close()


def test_workers_share_the_certificates_their_chains_repeat(services: Any, pki: Any) -> None:
    from signpeer_core.testing import add_signer

    first = add_signer(services, pki, "First")
    second = add_signer(services, pki, "Second")
    a, b = services.runtime.get(first), services.runtime.get(second)
    assert a.chain[0] != b.chain[0]  # their own leaves
    assert a.chain[1] is b.chain[1]  # one CA certificate object in memory, not one per worker


def test_status_reads_that_overlap_share_one_read_of_every_worker(grown: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Health checks (and worker listings) that come while one is being answered wait for that
    read instead of each reading every worker again: probes that give up and retry must not pile
    up reads on a server with many workers (50,000 workers took minutes to answer a start-up probe)."""
    import asyncio
    import threading

    from signpeer_core.rest import RestAPI
    from signpeer_core.workers import Worker

    services = Services.open(load_settings(grown))
    release = threading.Event()
    reads: list[int] = []
    status = Worker.status

    def counted(self: Worker) -> Any:
        reads.append(self.id)
        assert release.wait(30), "the test never released the status read"
        return status(self)

    monkeypatch.setattr(Worker, "status", counted)
    try:
        api = RestAPI(services)

        async def overlapping() -> list[list[dict[str, Any]]]:
            waiting = [asyncio.ensure_future(api._statuses()) for _ in range(5)]
            await asyncio.sleep(0)  # each request runs up to its wait (one turn of the loop, not a timed sleep)
            release.set()
            return await asyncio.gather(*waiting)

        answers = asyncio.run(overlapping())
        assert len(reads) == SIGNERS + 1  # every worker once, not five times
        assert all(answer == answers[0] for answer in answers)
        assert [d["id"] for d in answers[0]] == list(range(1, SIGNERS + 2))
        asyncio.run(api._statuses())  # a later request reads again: nothing is kept
        assert len(reads) == 2 * (SIGNERS + 1)
    finally:
        services.close()

"""``cpu_affinity`` (signpeer_core/affinity.py): each server process held on one CPU.

The values are parsed with clear errors; ``serve`` holds every thread of each process (read back
from ``/proc/<pid>/task/*/status``, the kernel's own account) on the CPU its index gives, a
process that replaces a killed one takes the dead one's CPU, and a value that cannot be applied
stops ``serve`` before it listens.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from signpeer_core import affinity
from signpeer_core.errors import ConfigurationError
from signpeer_core.testing import PKI, add_signer, client_context, run_signpeer, wait_until

PROCESS = "/signserver/rest/v1/workers/{}/process"
ALLOWED = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
linux_only = pytest.mark.skipif(not ALLOWED, reason="CPU affinity is Linux's")


@pytest.mark.parametrize("value, cpus", [
    ("off", None), (" OFF ", None), ("auto", ()), ("Auto", ()),
    ("0", (0,)), ("3", (3,)), ("0-2", (0, 1, 2)), ("4,0-1", (0, 1, 4)), ("1, 1", (1,)),
])
def test_values(value: str, cpus: tuple[int, ...] | None) -> None:
    assert affinity.parse(value) == cpus


@pytest.mark.parametrize("value", ["", "on", "yes", "-1", "1-", "2-1", "0-x", "1.5", "0;1", "0-99999", "٣"])
def test_a_value_that_is_none_says_what_is_expected(value: str) -> None:
    with pytest.raises(ConfigurationError, match="is not off, auto or a CPU list such as 0, 2-3 or 0,2"):
        affinity.parse(value)


def test_a_system_without_cpu_affinity_is_told_to_set_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_setaffinity", raising=False)
    assert affinity.cpu_for("off", 0) is None and affinity.pin("off") is None
    with pytest.raises(ConfigurationError, match=r"needs a system with CPU affinity \(Linux\); set it to off"):
        affinity.cpu_for("auto", 0)


@linux_only
def test_processes_go_round_the_cpus_they_may_use() -> None:
    assert affinity.cpu_for("off", 0) is None
    assert [affinity.cpu_for("auto", i) for i in range(2 * len(ALLOWED))] == ALLOWED * 2
    last = ALLOWED[-1]
    assert affinity.cpu_for(str(last), 5) == last


@linux_only
def test_a_listed_cpu_the_server_may_not_use_is_refused() -> None:
    with pytest.raises(ConfigurationError) as caught:
        affinity.cpu_for(f"{ALLOWED[0]},4090-4095", 0)
    assert "lists CPU 4090-4095, which this server may not use" in caught.value.message
    assert f"it may use {affinity._ranges(ALLOWED)}" in caught.value.message


def _cpus_of_every_thread(pid: int) -> set[str]:
    """``Cpus_allowed_list`` of each thread of ``pid``, as the kernel reports it."""
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            status = Path(f"/proc/{pid}/task/{task}/status").read_text()
        except OSError:  # a thread that ended meanwhile
            continue
        found.update(line.split(":", 1)[1].strip() for line in status.splitlines()
                     if line.startswith("Cpus_allowed_list:"))
    return found


def _server_children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-ww", "-o", "pid=,stat=,args=", "--ppid", str(pid)], capture_output=True, text=True)
    return sorted(int(line.split()[0]) for line in out.stdout.splitlines()
                  if "spawn_main" in line and not line.split()[1].startswith("Z"))


@linux_only
@pytest.mark.skipif(len(ALLOWED) < 2, reason="on one CPU, held and not held read the same")
def test_one_process_runs_every_thread_on_the_listed_cpu(signpeer_home: Path, services, pki: PKI,
                                                         start_server) -> None:
    add_signer(services, pki, "S", AUTHTYPE="NOAUTH")
    cpu = ALLOWED[-1]
    server = start_server(signpeer_home, "--cpu-affinity", str(cpu))
    assert server.proc is not None
    r = httpx.post(server.url + PROCESS.format("S"), json={"data": "x"}, verify=client_context(pki.ca_pem),
                   headers={"X-Keyfactor-Requested-With": "t"})
    assert r.status_code == 200, r.text
    assert len(os.listdir(f"/proc/{server.proc.pid}/task")) > 1  # the claim is about several threads
    assert _cpus_of_every_thread(server.proc.pid) == {str(cpu)}
    assert f"server process 0 runs on CPU {cpu} (cpu_affinity {cpu})" in server.log()


@linux_only
@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two CPUs")
def test_auto_gives_each_process_its_own_cpu_and_a_replacement_the_dead_ones(
        signpeer_home: Path, services, pki: PKI, start_server) -> None:
    """``SIGNPEER_CPU_AFFINITY=auto`` (the environment's way) with ``--workers 2``: process 0 on the
    first CPU, process 1 on the second; the supervisor itself is left to the kernel. A process
    killed with -9 is replaced on its CPU."""
    add_signer(services, pki, "S", AUTHTYPE="NOAUTH")
    server = start_server(signpeer_home, "--workers", "2", env={"SIGNPEER_CPU_AFFINITY": "auto"})
    assert server.proc is not None
    wait_until(lambda: len(_server_children(server.proc.pid)) == 2, what="two server processes")
    expected = {str(ALLOWED[0]), str(ALLOWED[1])}

    def placed() -> dict[int, str]:
        found = {}
        for pid in _server_children(server.proc.pid):
            cpus = _cpus_of_every_thread(pid)
            if len(cpus) == 1:
                found[pid] = cpus.pop()
        return found

    wait_until(lambda: set(placed().values()) == expected and len(placed()) == 2,
               what="each server process on its own CPU")
    assert _cpus_of_every_thread(server.proc.pid) == {affinity._ranges(ALLOWED)}  # the supervisor: not held
    before = placed()
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in placed() and set(placed().values()) == expected and len(placed()) == 2,
               what="the replacement on the killed process's CPU")
    ctx = client_context(pki.ca_pem)

    def signed() -> bool:  # a new connection may go to the replacement, still starting: until it answers
        try:
            r = httpx.post(server.url + PROCESS.format("S"), json={"data": "x"}, verify=ctx, timeout=30,
                           headers={"X-Keyfactor-Requested-With": "t", "Connection": "close"})
        except httpx.TransportError:
            return False
        assert r.status_code == 200, r.text
        return True

    wait_until(signed, what="a signature after the replacement")


@pytest.mark.parametrize("value, words", [
    ("0-x", b"cpu_affinity '0-x' is not off, auto or a CPU list"),
    pytest.param("4095", b"cpu_affinity lists CPU 4095, which this server may not use", marks=linux_only),
])
def test_a_value_that_cannot_be_applied_stops_serve_before_it_listens(signpeer_home: Path, value: str,
                                                                      words: bytes) -> None:
    """The value is checked before the port is bound: with the port taken, the error is about the
    value, not the port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for extra in ((), ("--workers", "2")):
            r = run_signpeer(signpeer_home, "serve", "--port", port, "--cpu-affinity", value, *extra, timeout=30)
            assert r.returncode == 254 and words in r.stderr, r.stderr
            assert b"already in use" not in r.stderr and b"Traceback" not in r.stderr


def test_the_settings_file_takes_it(signpeer_home: Path) -> None:
    from signpeer_core.settings import load_settings

    (signpeer_home / "signpeer.toml").write_text((signpeer_home / "signpeer.toml").read_text()
                                                 + '\ncpu_affinity = "auto"\n')
    assert load_settings(signpeer_home).cpu_affinity == "auto"

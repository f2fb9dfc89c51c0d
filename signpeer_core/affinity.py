"""CPU affinity of the server's processes: the ``cpu_affinity`` setting, one CPU per process.

Why one CPU per process: CPython runs one thread of a process at a time (the GIL). A server
process's threads (the event loop, the hand-off threads of the administration and RA calls, the
membership step, the notification listener) pass the GIL to each other many times per request:
every database statement releases it, and the other thread takes it. When the kernel runs those
threads on different CPUs, each pass wakes the other CPU and moves the interpreter's state between
the CPUs' caches. On the 2-core machine of ``docs/performance.md`` a peer renewal (three requests
whose work runs in hand-off threads) cost 13-48 % less server CPU with the process held on one CPU
(runs alternated in one window; median 28 %). A process cannot run Python on two CPUs anyway; what it
gives up on one CPU is the work done with the GIL released in parallel with its other threads
(hashing a large document, an HSM computing a signature in a PKCS#11 call).

Values (``signpeer.toml`` ``cpu_affinity``, ``SIGNPEER_CPU_AFFINITY``, ``serve --cpu-affinity``):

* ``off`` (the default): the kernel places the threads;
* ``auto``: process ``i`` of ``serve --workers N`` (0 for a single process) runs on the
  ``i``-th CPU this server may use (``os.sched_getaffinity``: a container's cpuset, ``taskset``),
  round robin when there are more processes than CPUs;
* a CPU list, e.g. ``1``, ``2-3``, ``0,2``: the same over these CPUs (each one the server may use).

Two servers on one machine with ``auto`` both start on its first CPUs: give each its own list.
"""

from __future__ import annotations

import logging
import os

from signpeer_core.errors import ConfigurationError

log = logging.getLogger("signpeer.server")

OFF = "off"
AUTO = "auto"
#: The environment variable through which ``serve --workers N`` tells each process its index
#: (the supervisor sets it before starting a process, and before starting its replacement).
PROCESS_INDEX_ENV = "SIGNPEER_PROCESS_INDEX"


def parse(value: str) -> tuple[int, ...] | None:
    """The CPUs a ``cpu_affinity`` value names: None for ``off``, () for ``auto`` (every CPU the
    process may use), else the listed CPUs in ascending order. A clear error for anything else."""
    text = value.strip().lower()
    if text == OFF:
        return None
    if text == AUTO:
        return ()
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        if not (low.isascii() and low.isdigit() and (not dash or (high.isascii() and high.isdigit()))) \
                or len(part) > 11:
            raise _invalid(value)
        first, last = int(low), int(high) if dash else int(low)
        if last < first or last - first >= 4096:
            raise _invalid(value)
        cpus.update(range(first, last + 1))
    return tuple(sorted(cpus))


def _invalid(value: str) -> ConfigurationError:
    shown = value if len(value) <= 40 else value[:40] + "..."
    return ConfigurationError(f"cpu_affinity '{shown}' is not off, auto or a CPU list such as 0, 2-3 or 0,2")


def _ranges(cpus: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2,5`` (the notation of ``taskset`` and ``/proc``)."""
    out: list[str] = []
    for cpu in cpus:
        if out and out[-1].split("-")[-1] == str(cpu - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{cpu}"
        else:
            out.append(str(cpu))
    return ",".join(out)


def cpu_for(value: str, index: int) -> int | None:
    """The CPU process ``index`` of this server runs on under ``value`` (None: ``off``).
    Raises :class:`ConfigurationError` for a value that is not one, a listed CPU the process may
    not use, or a system without CPU affinity."""
    listed = parse(value)
    if listed is None:
        return None
    if not hasattr(os, "sched_setaffinity"):
        raise ConfigurationError("cpu_affinity needs a system with CPU affinity (Linux); set it to off")
    allowed = sorted(os.sched_getaffinity(0))
    if listed:
        outside = [cpu for cpu in listed if cpu not in allowed]
        if outside:
            raise ConfigurationError(
                f"cpu_affinity lists CPU {_ranges(outside)}, which this server may not use (it may use "
                f"{_ranges(allowed)}: its cpuset or taskset); list CPUs among those, or use auto")
        choices = list(listed)
    else:
        choices = allowed
    return choices[index % len(choices)]


def process_index() -> int:
    """This process's index among ``serve --workers N`` (0 for a single process)."""
    text = os.environ.get(PROCESS_INDEX_ENV, "0")
    return int(text) if text.isascii() and text.isdigit() else 0


def pin(value: str, index: int | None = None) -> int | None:
    """Hold every thread of this process, and the threads it starts later, on the CPU
    :func:`cpu_for` gives process ``index`` (default: :func:`process_index`); the CPU, or None
    when ``value`` is ``off``. Logs the choice."""
    index = process_index() if index is None else index
    cpu = cpu_for(value, index)
    if cpu is None:
        return None
    # Threads started from now on inherit the affinity of the thread that starts them; those that
    # already run (a log writer, a tracer's exporter) are set one by one.
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:  # the cpuset changed since the check, or the system refuses (seccomp)
        raise ConfigurationError(f"cpu_affinity {value.strip().lower()}: cannot hold this process on CPU {cpu}: "
                                 f"{exc.strerror or exc}; set cpu_affinity to off, or list a CPU the server may use") from exc
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        tasks = []
    for task in tasks:
        try:
            os.sched_setaffinity(int(task), {cpu})
        except (OSError, ValueError):  # a thread that ended meanwhile
            continue
    log.info("server process %s runs on CPU %s (cpu_affinity %s)", index, cpu, value.strip().lower())
    return cpu

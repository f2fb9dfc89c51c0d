"""CPU time of a benchmark's server processes, read from ``/proc``: what a request costs whatever
else the machine is doing, unlike its latency."""

from __future__ import annotations

import os
from pathlib import Path


def tree_cpu(pid: int, reaped: bool = False) -> tuple[float, float]:
    """(user, system) CPU seconds of a process and its children (``serve --workers N``);
    ``reaped``: with the children that ended and were waited for (a PostgreSQL server's backends)."""
    user = system = 0.0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    pids += [int(c) for c in children]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        user += int(fields[11]) / os.sysconf("SC_CLK_TCK")
        system += int(fields[12]) / os.sysconf("SC_CLK_TCK")
        if reaped and p == pid:  # cutime, cstime
            user += int(fields[13]) / os.sysconf("SC_CLK_TCK")
            system += int(fields[14]) / os.sysconf("SC_CLK_TCK")
    return user, system


def loop_cpu(pid: int) -> float:
    """CPU seconds of the server's main thread: its event loop (HTTP, TLS, routing, JSON), as
    against the threads the operations run in."""
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

"""Start-up cost of ``signpeer`` commands: CPU seconds (user + system) of each whole process.

Makes a data directory with ``signpeer init`` (demo workers), then runs each command ``--runs``
times and prints the median CPU time and peak resident memory per command. With ``--compare
VENV`` (another checkout's virtualenv, e.g. of the commit before a change) the two are run in turn,
A B A B ..., and the median of the pairwise ratios this/other is printed, so a machine whose speed
drifts during the run still gives a fair comparison.

    .venv/bin/python bench/bench_cli_startup.py [--runs 7] [--compare /path/to/other/.venv]

CPU time is read from the kernel's accounting of each finished child (``os.wait4``), so a loaded
machine slows the wall clock, not the figure (much).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

COMMANDS = (("--help",), ("getstatus", "brief", "all"), ("auditlog",))


def run(signpeer: Path, args: tuple[str, ...], env: dict[str, str]) -> tuple[float, float]:
    """(CPU seconds, peak RSS MiB) of one ``signpeer *args`` process."""
    proc = subprocess.Popen([str(signpeer), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{signpeer} {' '.join(args)} exited {proc.returncode}: {err[-500:]}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--compare", type=Path, help="another virtualenv whose signpeer to run in turn")
    args = parser.parse_args()
    this = Path(sys.executable).parent / "signpeer"
    other = args.compare / "bin" / "signpeer" if args.compare else None
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNPEER_")} | {"SIGNPEER_HOME": tmp}
        subprocess.run([str(this), "init"], env=env, check=True, capture_output=True)
        print(f"load average {os.getloadavg()[0]:.1f}; {args.runs} runs each; CPU s (user+sys), median")
        for command in COMMANDS:
            run(this, command, env)  # warm the page cache
            mine, theirs, peak = [], [], []
            for _ in range(args.runs):
                cpu, rss = run(this, command, env)
                mine.append(cpu)
                peak.append(rss)
                if other is not None:
                    theirs.append(run(other, command, env)[0])
            line = f"signpeer {' '.join(command):22s} {statistics.median(mine):6.3f} s  {max(peak):5.1f} MiB"
            if theirs:
                ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
                line += (f"   other {statistics.median(theirs):6.3f} s   this/other {statistics.median(ratios):.2f} "
                         f"(min {min(ratios):.2f}, max {max(ratios):.2f})")
            print(line)


if __name__ == "__main__":
    main()

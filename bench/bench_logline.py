"""Benchmark: the worker log line's cost, ``Pipeline.log`` and the batch's formatting and write.

Not a test. It sets up the server's logging (``configure_logging``, the text or JSON format, to a
file in a temporary folder) and calls ``Pipeline.log`` 16 times per event-loop turn, as a
server's 16 kept-alive connections do, for ``TURNS`` turns; the batch writes each turn's lines.
Run it under callgrind twice and take the difference, so that start-up cancels out:

    for n in 100 1100; do PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/tmp/ll.$n \\
        .venv/bin/python bench/bench_logline.py text $n 2>&1 | grep refs; done
    # instructions per line: (refs at 1100 - refs at 100) / 16000

(The loop turn and the write are in the figure, shared by the 16 lines of a turn.)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from signpeer_core.logconfig import configure_logging
from signpeer_core.pipeline import Caller, Pipeline
from signpeer_core.settings import load_settings


async def lines(turns: int) -> None:
    caller = Caller("REST", None, "127.0.0.1")
    log = Pipeline.log
    started = time.perf_counter()
    for _ in range(turns):
        for _ in range(16):
            log("abcd1234-17", "PlainSigner", None, caller, "SUCCESS", started, None)
        await asyncio.sleep(0)


def main() -> None:
    """``bench_logline.py [text|json] [TURNS]`` (text, 1000 by default, as ``make bench`` runs it)."""
    log_format = sys.argv[1] if len(sys.argv) > 1 else "text"
    turns = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    if log_format not in ("text", "json"):
        raise SystemExit("usage: bench_logline.py [text|json] [TURNS]")
    with tempfile.TemporaryDirectory(prefix="signpeer-bench-log-") as tmp:
        settings = replace(load_settings(Path(tmp)), log_format=log_format, log_file=str(Path(tmp) / "server.log"),
                           log_level="INFO")
        configure_logging(settings)
        started = time.thread_time()
        asyncio.run(lines(turns))
        seconds = time.thread_time() - started
    print(f"worker log, {log_format}: {turns * 16} lines, {seconds / (turns * 16) * 1e6:.2f} us of CPU per line "
          "(the instruction count under callgrind is the steady figure: see the docstring)", file=sys.stderr)


if __name__ == "__main__":
    main()

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
    if len(sys.argv) != 3 or sys.argv[1] not in ("text", "json"):
        raise SystemExit("usage: bench_logline.py text|json TURNS")
    with tempfile.TemporaryDirectory(prefix="signpeer-bench-log-") as tmp:
        settings = replace(load_settings(Path(tmp)), log_format=sys.argv[1], log_file=str(Path(tmp) / "server.log"),
                           log_level="INFO")
        configure_logging(settings)
        asyncio.run(lines(int(sys.argv[2])))


if __name__ == "__main__":
    main()

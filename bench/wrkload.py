"""``wrk`` (a native HTTP load generator) as a second client of the REST benchmark.

wrk speaks HTTPS with kept-alive connections but presents no client certificate, so it measures
``AUTHTYPE=NOAUTH`` workers. Its POST body comes from a Lua script written at run time into a
temporary directory. One wrk thread: on a small machine the client takes the least CPU from the
server this way, and its cost next to the Python client's shows what the load generator itself
takes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Keyfactor-Requested-With"] = "bench"
local f = assert(io.open({body_path!r}, "rb"))
wrk.body = f:read("*a")
f:close()
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def available() -> str | None:
    """The path of ``wrk``, or None when it is not installed."""
    return shutil.which("wrk")


class WrkError(RuntimeError):
    """wrk failed or saw answers other than 200."""


def _millis(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def run(url: str, body: bytes, seconds: float, connections: int, threads: int = 1) -> dict[str, float]:
    """POST ``body`` to ``url`` for ``seconds`` over ``connections`` kept-alive connections;
    returns ``requests``, ``elapsed`` (s), ``rate`` (req/s), ``p50``, ``p99`` (ms)."""
    with tempfile.TemporaryDirectory(prefix="signpeer-wrk-") as tmp:
        body_path = Path(tmp) / "body.json"
        body_path.write_bytes(body)
        script = Path(tmp) / "post.lua"
        script.write_text(_SCRIPT.format(body_path=str(body_path)))
        out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
                              "--latency", "-s", str(script), url], capture_output=True, text=True,
                             timeout=seconds + 60)
    text = out.stdout
    if out.returncode != 0:
        raise WrkError(f"wrk exited with {out.returncode}: {out.stderr.strip() or text.strip()}")
    if "Non-2xx or 3xx responses" in text or "Socket errors" in text:
        raise WrkError(f"wrk saw failed requests:\n{text}")
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", text)
    p50 = re.search(r"^\s*50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s*99%\s+(\S+)", text, re.M)
    if done is None or p50 is None or p99 is None:
        raise WrkError(f"cannot read wrk's output:\n{text}")
    requests = int(done.group(1))
    elapsed = _millis(done.group(2) + done.group(3)) / 1000
    return {"requests": requests, "elapsed": elapsed, "rate": requests / elapsed, "p50": _millis(p50.group(1)),
            "p99": _millis(p99.group(1))}

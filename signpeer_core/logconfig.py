"""Logging set-up of a server process: signpeer's loggers, the worker log included.

Every ``signpeer.*`` logger (``signpeer.worker`` writes one line per signing request, see
:mod:`signpeer_core.pipeline`) goes to stderr or ``settings.log_file`` through one handler that
writes the lines of one event-loop turn with one write, in a format whose date is formatted
once per second. Every line is one line: control characters in the message (a worker name
with ``%0A`` in a request path, a NUL) are escaped (:func:`escape_controls`), so a request can
neither forge a log line nor write raw bytes; a traceback stays below its line as it is.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from signpeer_core.settings import Settings


#: Control characters (C0, DEL, C1), line and paragraph separators, bidirectional controls and lone
#: surrogates, each written as a Python escape.
_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]} | {
    c: f"\\u{c:04x}" for c in [0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A), *range(0xD800, 0xE000)]}


def escape_controls(text: str) -> str:
    """``text`` with every control character escaped (``\\n`` → ``\\x0a``): a logged value can never
    start a line of its own, hide what follows it, or break the log file's encoding."""
    return text.translate(_ESCAPES)


class _LineFormatter(logging.Formatter):
    """``%(asctime)s %(levelname)s %(name)s: %(message)s``, with the date formatted once per second: the worker log writes a line
    per signing request, and ``time.strftime`` per line was a visible part of its cost."""

    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        message = record.getMessage()
        if not message.isprintable():  # (a C-speed check; the rare line with a control character pays more)
            message = escape_controls(message)
        line = f"{self._stamp},{int(record.msecs):03d} {record.levelname} {record.name}: {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _BatchedStreamHandler(logging.StreamHandler):
    """Writes the lines logged during one turn of the event loop with one write.

    A write per worker-log line cost about as much as the rest of the line's handling. Lines
    logged on the event loop are collected and written by a callback that runs right after the
    requests ready in that turn, so under load one write carries many lines, and at low load a
    line is out within the same millisecond. Lines logged off the loop are written at once.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            super().emit(record)  # off the loop: this line at once (StreamHandler takes the lock)
            return
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        with self.lock:  # type: ignore[union-attr]  # Handler.__init__ creates it; typeshed says Optional
            self._pending.append(line)
            if self._scheduled:
                return
            self._scheduled = True
        loop.call_soon(self._write_pending)

    def _write_pending(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # Handler.__init__ creates it; typeshed says Optional
            self._scheduled = False
            lines, self._pending = "".join(self._pending), []
            if lines:
                try:
                    self.stream.write(lines)
                    self.stream.flush()
                except Exception:  # a full disk must not fail signing requests; the lines are lost
                    pass

    def flush(self) -> None:
        """Also writes what is pending (logging.shutdown calls this at exit)."""
        self._write_pending()
        super().flush()


def configure_logging(settings: Settings) -> None:
    """Send signpeer's loggers (the worker log included) to stderr or ``settings.log_file``.

    Idempotent: each server process calls it once, a second call changes nothing.
    """
    root = logging.getLogger("signpeer")
    if getattr(root, "_signpeer_configured", False):
        return
    # The logging HOWTO's optimizations: the worker log writes a line per signing request, and
    # caller lookup plus thread/process bookkeeping cost more than the line itself.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if settings.log_file:
        path = settings.path(settings.log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        stream: Any = open(path, "a", encoding="utf-8")  # lives as long as the process
    else:
        stream = sys.stderr
    handler = _BatchedStreamHandler(stream)
    handler.setFormatter(_LineFormatter())
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    root.propagate = False
    root._signpeer_configured = True  # type: ignore[attr-defined]  # a marker on the root logger itself

"""Logging set-up of a server process: signpeer's loggers, the worker log included.

Every ``signpeer.*`` logger (``signpeer.worker`` writes one line per signing request, see
:mod:`signpeer_core.pipeline`; ``signpeer.audit`` one per audit record; ``signpeer.server``
the server's own) goes to stderr or ``settings.log_file`` through one handler that writes the
lines of one event-loop turn with one write (:mod:`signpeer_core.logwriter`; the worker log's
line takes a short way to it and is formatted when the batch is written). Every text line is one line: control characters in the
message (a worker name with ``%0A`` in a request path, a NUL) are escaped
(:func:`escape_controls`), so a request can neither forge a log line nor write raw bytes; a
traceback stays below its line as it is.

Two formats (``log_format``): ``text`` (the default, a date formatted once per second) and
``json``, one JSON object a line with ``time`` (UTC, ISO 8601), ``level``, ``logger``,
``message``, ``request_id`` when the line belongs to an HTTP request (the id the client gets in
the ``X-Request-ID`` header, :data:`request_id_var`), and the fields of structured lines: a
record whose single argument is a mapping (``log.info("worker=%(worker)s", fields)``) has its
keys written as fields.

Rotation is left to the system (logrotate, journald): the log file is reopened on ``SIGHUP``.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from signpeer_core.logwriter import BatchedStreamHandler, set_writer
from signpeer_core.pipeline import current_request_id

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


#: A line's milliseconds, "000" to "999", looked up: ``:03d`` cost about 2,000 instructions a line.
_MILLIS = tuple(f"{n:03d}" for n in range(1000))


class _LineFormatter(logging.Formatter):
    """``%(asctime)s %(levelname)s %(name)s: %(message)s``, with the date formatted once per second: the worker log writes a line
    per signing request, and ``time.strftime`` per line was a visible part of its cost."""

    _second = -1
    _stamp = ""
    #: A line shows only its message (logwriter.PartsFormatter.writes_fields).
    writes_fields = False

    def format(self, record: logging.LogRecord) -> str:
        line = self.format_parts(record.created, record.levelname, record.name, record.getMessage(), record.args)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line

    def format_parts(self, created: float, levelname: str, name: str, message: str, args: Any) -> str:
        """The line of a record made of these parts (the log writer's short way formats with it)."""
        second = int(created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        if not message.isprintable():  # (a C-speed check; the rare line with a control character pays more)
            message = escape_controls(message)
        ms = int((created - second) * 1000)  # 0-999 (before 1970 it has a minus)
        return f"{self._stamp},{_MILLIS[ms] if 0 <= ms < 1000 else f'{ms:03d}'} {levelname} {name}: {message}"


#: The id of the HTTP request being served (set by the app's GuardMiddleware); JSON lines carry it.
request_id_var = current_request_id

LOG_FORMATS = ("text", "json")


class _JsonFormatter(logging.Formatter):
    """One JSON object a line; the fields of a structured record (a mapping argument) included."""

    _second = -1
    _stamp = ""
    #: A line shows a structured record's fields as they are (logwriter.PartsFormatter.writes_fields).
    writes_fields = True

    def format(self, record: logging.LogRecord) -> str:
        exception = self.formatException(record.exc_info) if record.exc_info else None
        return self.format_parts(record.created, record.levelname, record.name, record.getMessage(), record.args,
                                 exception)

    def format_parts(self, created: float, levelname: str, name: str, message: str, args: Any,
                     exception: str | None = None) -> str:
        """The line of a record made of these parts (the log writer's short way formats with it)."""
        second = int(created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        ms = int((created - second) * 1000)  # 0-999 (before 1970 it has a minus)
        data: dict[str, Any] = {"time": f"{self._stamp}.{_MILLIS[ms] if 0 <= ms < 1000 else f'{ms:03d}'}Z", "level": levelname,
                                "logger": name, "message": message}
        if isinstance(args, Mapping):
            data.update(args)
        if "request_id" not in data:
            request_id = request_id_var.get()
            if request_id is not None:
                data["request_id"] = request_id
        if exception is not None:
            data["exception"] = exception
        return json.dumps(data, ensure_ascii=False, default=str)


_handler: BatchedStreamHandler | None = None
_log_path: str | None = None


def reopen_log_file() -> None:
    """Reopen the log file (what ``SIGHUP`` does); nothing when logging to stderr."""
    if _handler is not None and _log_path is not None:
        _handler.flush()
        _handler.reopen(_log_path)


def _on_sighup(signum: int, frame: Any) -> None:
    try:
        reopen_log_file()
    except OSError as exc:  # the old file stays in use; say so on it
        logging.getLogger("signpeer.server").error("cannot reopen the log file %s: %s", _log_path, exc)


def configure_logging(settings: Settings) -> None:
    """Send signpeer's loggers (the worker log included) to stderr or ``settings.log_file``.

    Idempotent: each server process calls it once, a second call changes nothing.
    """
    global _handler, _log_path
    root = logging.getLogger("signpeer")
    if getattr(root, "_signpeer_configured", False):
        return
    log_format = settings.log_format.strip().lower()
    if log_format not in LOG_FORMATS:
        from signpeer_core.errors import ConfigurationError

        raise ConfigurationError(f"log_format must be one of {', '.join(LOG_FORMATS)}, not '{settings.log_format}'")
    # The logging HOWTO's optimizations: the worker log writes a line per signing request, and
    # caller lookup plus thread/process bookkeeping cost more than the line itself.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if settings.log_file:
        path = settings.path(settings.log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        stream: Any = open(path, "a", encoding="utf-8")  # lives as long as the process (or a SIGHUP)
        _log_path = str(path)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, _on_sighup)
    else:
        stream = sys.stderr
    handler = BatchedStreamHandler(stream)
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _LineFormatter())
    handler.owner = root
    _handler = handler
    set_writer(handler)  # the worker log's short way (logwriter.direct_writer)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    root.propagate = False
    root._signpeer_configured = True  # type: ignore[attr-defined]  # a marker on the root logger itself

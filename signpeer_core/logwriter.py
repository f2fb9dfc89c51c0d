"""The log writer of a server process: the lines of one event-loop turn go out with one write,
and the worker log's line per signing request takes a short way to it.

:class:`BatchedStreamHandler` is the one handler of signpeer's loggers (set up by
:mod:`signpeer_core.logconfig`). Lines logged on the event loop are collected and written by a
callback that runs right after the requests ready in that turn, so under load one write carries
many lines, and at low load a line is out within the same millisecond. Lines logged off the loop
are written at once.

The worker log writes a line per signing request (:meth:`signpeer_core.pipeline.Pipeline.log`).
Through ``logging`` that line cost a record (``LogRecord``: some twenty attributes), the logger
hierarchy walk, the handler's lock and the formatting, about a tenth of a kept-alive request's
server time. :func:`direct_writer` gives a logger's writer when a record of that logger would
reach this handler and nothing else (no handler or filter of its own, nor on ``signpeer``): then
:meth:`BatchedStreamHandler.add` keeps the line's parts (time, template, fields) and the batch
formats them when it writes, with the same formatter, so the line is the one ``logging`` would
have written. Any other set-up (a test's handler on the logger, a filter) gets the ``logging``
way.

The batch fills a line's template with :func:`fill`, which writes what ``template % fields``
writes, for the worker log's line about 1,500 instructions cheaper (9,500 with ``%``): ``%``
parses the template and hashes each key anew for every line.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Protocol

_INFO = logging.INFO


class PartsFormatter(Protocol):
    """A formatter that can also format a line from its parts (the formats of logconfig.py)."""

    #: Whether a line shows the fields it was given as they are (JSON), or only the message its
    #: template makes of them (text): see :attr:`BatchedStreamHandler.writes_fields`.
    writes_fields: bool

    def format_parts(self, created: float, levelname: str, name: str, message: str, args: Any) -> str: ...


#: A line kept by :meth:`BatchedStreamHandler.add`: (time, level name, logger name, template, fields).
_Parts = tuple[float, str, str, str, Mapping[str, object]]


class BatchedStreamHandler(logging.StreamHandler):
    """Writes the lines logged during one turn of the event loop with one write.

    A write per worker-log line cost about as much as the rest of the line's handling.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._pending: list[str | _Parts] = []
        self._scheduled = False
        #: The logger whose records this handler takes (``signpeer``), for :func:`direct_writer`.
        self.owner: logging.Logger | None = None
        #: Whether its formatter writes a line's fields as they are (JSON), not only the message its
        #: template makes of them (text): a caller of :meth:`add` whose template formats a field
        #: itself (``%(duration_ms).2f``) may then pass the value unrounded. True unless the
        #: formatter says otherwise (its ``writes_fields``).
        self.writes_fields = True

    def setFormatter(self, fmt: logging.Formatter | None) -> None:  # logging's name
        super().setFormatter(fmt)
        self.writes_fields = getattr(fmt, "writes_fields", True)

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
        self._keep(line, loop)

    # -- the worker log's short way --------------------------------------------------------
    def add(self, name: str, template: str, fields: Mapping[str, object]) -> None:
        """An INFO line of logger ``name``: what ``logging.getLogger(name).info(template, fields)``
        writes, formatted when the batch is written. The caller checked :func:`direct_writer`
        and that the logger is enabled for INFO."""
        created = time.time()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # off the loop: at once, as emit does
            line = self._format_parts((created, "INFO", name, template, fields))
            with self.lock:  # type: ignore[union-attr]  # Handler.__init__ creates it; typeshed says Optional
                self.stream.write(line)
                self.stream.flush()
            return
        self._keep((created, "INFO", name, template, fields), loop)

    def _format_parts(self, parts: _Parts) -> str:
        created, levelname, name, template, fields = parts
        formatter: PartsFormatter = self.formatter  # type: ignore[assignment]  # logconfig sets one of its formats
        return formatter.format_parts(created, levelname, name, fill(template, fields), fields) + self.terminator

    # -- the batch -------------------------------------------------------------------------
    def _keep(self, item: str | _Parts, loop: asyncio.AbstractEventLoop) -> None:
        with self.lock:  # type: ignore[union-attr]  # Handler.__init__ creates it; typeshed says Optional
            self._pending.append(item)
            if self._scheduled:
                return
            self._scheduled = True
        loop.call_soon(self._write_pending)

    def _write_pending(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # Handler.__init__ creates it; typeshed says Optional
            self._scheduled = False
            pending, self._pending = self._pending, []
            if not pending:
                return
            lines = []
            for item in pending:
                if isinstance(item, str):
                    lines.append(item)
                    continue
                try:
                    lines.append(self._format_parts(item))
                except Exception:  # lost, and said on stderr as logging's handleError says it
                    if logging.raiseExceptions:
                        traceback.print_exc(file=sys.stderr)
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except Exception:  # a full disk must not fail signing requests; the lines are lost
                pass

    def flush(self) -> None:
        """Also writes what is pending (logging.shutdown calls this at exit)."""
        self._write_pending()
        super().flush()

    def reopen(self, path: str) -> None:
        """Write on from a freshly opened ``path`` (after logrotate moved the file away)."""
        new = open(path, "a", encoding="utf-8")
        with self.lock:  # type: ignore[union-attr]  # Handler.__init__ creates it; typeshed says Optional
            old = self.setStream(new)
        if old is not None and old is not sys.stderr:
            old.close()


_writer: BatchedStreamHandler | None = None


def set_writer(handler: BatchedStreamHandler | None) -> None:
    """Name the process's handler (:func:`signpeer_core.logconfig.configure_logging` does)."""
    global _writer
    _writer = handler


def direct_writer(logger: logging.Logger, writer: BatchedStreamHandler | None = None) -> BatchedStreamHandler | None:
    """The handler that takes ``logger``'s lines directly (:meth:`BatchedStreamHandler.add`), or
    None: then log through ``logger``. ``writer``: the handler to ask about (the process's, named
    by :func:`set_writer`, by default). It takes them when a record of ``logger`` would reach it
    alone, unfiltered and at any level from INFO. (One function, asked per worker log line: the
    method call it made before cost about a fifth of the check.)"""
    if writer is None:
        writer = _writer
        if writer is None:
            return None
    owner = writer.owner
    if owner is None or logger.handlers or logger.filters or not logger.propagate or logger.disabled:
        return None
    parent = logger.parent
    while parent is not owner:  # loggers between the two (none for signpeer.worker)
        if parent is None or parent.handlers or parent.filters or not parent.propagate or parent.disabled:
            return None
        parent = parent.parent
    handlers = owner.handlers
    if (len(handlers) == 1 and handlers[0] is writer and not owner.filters and not owner.disabled
            and not writer.filters and writer.level <= _INFO):
        return writer
    return None


#: What a template's filling ends at: a ``%(name)s``, ``%(name)r`` or ``%(name).2f`` field, or ``%%``.
_FIELD = re.compile(r"%\(([^()]*)\)(s|r|\.[0-9]f)|%%")
#: The template -> its filling (None: ``%`` fills it), made on a template's first line.
_fillers: dict[str, Callable[[Mapping[str, object]], str] | None] = {}


def fill(template: str, fields: Mapping[str, object]) -> str:
    """``template % fields``: the same text, or the same error."""
    try:
        filler = _fillers[template]
    except KeyError:
        if len(_fillers) >= 256:  # a process has a handful of templates; past that, % fills the rest
            return template % fields
        filler = _fillers[template] = _filler(template)
    return template % fields if filler is None else filler(fields)


def _filler(template: str) -> Callable[[Mapping[str, object]], str] | None:
    """A function of the fields that returns ``template % fields``: one f-string of the
    template's text and its fields, each taken as ``%`` takes it (``%s``: ``str``, ``%r``:
    ``repr``, ``%(name).2f``: a float's ``.2f``; a value of another type there makes the function
    call ``%`` itself), read with keys made once. None for a template with anything else in it (a
    width, ``%d``, a positional field): ``%`` fills that one. The made code names only the
    function's own parameters; the template's text and keys are their values, never code."""
    values: dict[str, str] = {"template": template}
    parts: list[str] = []
    floats: list[str] = []
    at = 0
    for match in _FIELD.finditer(template):
        text = template[at:match.start()]
        if "%" in text:
            return None
        at = match.end()
        key, conversion = match.group(1, 2)
        if key is None:  # %%
            text += "%"
        values[f"t{len(values)}"] = text
        parts.append(f"{{t{len(values) - 1}}}")
        if key is not None:
            name = f"k{len(values)}"
            values[name] = key
            if conversion in ("s", "r"):
                parts.append(f"{{fields[{name}]!{conversion}}}")
            else:
                floats.append(f"fields[{name}].__class__ is not float")
                parts.append(f"{{fields[{name}]:{conversion}}}")
    text = template[at:]
    if "%" in text:
        return None
    values[f"t{len(values)}"] = text
    parts.append(f"{{t{len(values) - 1}}}")
    # A function made by a function of those values: in the f-string they are its free variables
    # (cheaper to read than default arguments). A float field of another type than float, or a
    # missing field: % fills the line, or raises what it raises.
    check = (f"        try:\n            other = {' or '.join(floats)}\n        except KeyError:\n"
             "            other = True\n        if other:\n            return template % fields\n") if floats else ""
    code = (f"def make({', '.join(values)}):\n    def filler(fields):\n{check}"
            f"        return f\"{''.join(parts)}\"\n    return filler\n")
    made: dict[str, Any] = {}
    exec(code, {}, made)  # only parameter names in the code (see the docstring)
    filler: Callable[[Mapping[str, object]], str] = made["make"](**values)
    return filler

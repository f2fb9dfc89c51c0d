"""Giving the memory of closed connections back to the system after a burst (:class:`MemoryTrimmer`)."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any


class MemoryTrimmer:
    """Gives the memory of closed connections back to the system after a burst.

    Each TLS connection allocates OpenSSL buffers and Python objects from glibc's heaps; when a
    burst of connections closes, the freed chunks stay in the heaps, fragmented, and resident
    memory only grows from burst to burst. Objects of closed connections caught in reference
    cycles (transports, protocols, tasks) wait for a full garbage collection, which a busy server
    may not run for thousands of connections. So: ``gc.collect()``, then ``malloc_trim(0)``,
    which returns free pages of every heap.
    It runs in a thread, once the connections of a burst are gone (:data:`TRIM_AFTER` closed
    connections and fewer than a tenth of them still open), at most every :data:`TRIM_INTERVAL`.
    """

    def __init__(self) -> None:
        self.closed = 0
        self.pending = False
        self.last = 0.0
        self.trims = 0
        self._trim: Any = _malloc_trim()

    def connection_closed(self, loop: asyncio.AbstractEventLoop, still_open: int) -> None:
        self.closed += 1
        if self._trim is None or self.pending or self.closed < TRIM_AFTER or still_open * 10 > self.closed:
            return
        self.pending = True
        delay = max(0.5, TRIM_INTERVAL - (time.monotonic() - self.last))
        loop.call_later(delay, self._start, loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.closed = 0
        fut = loop.run_in_executor(None, self._collect_and_trim)
        fut.add_done_callback(self._done)

    def _collect_and_trim(self) -> None:
        gc.collect()  # what the connections left in reference cycles (asyncio's and uvicorn's own)
        self._trim(0)

    def _done(self, fut: Any) -> None:
        self.pending = False
        self.last = time.monotonic()
        self.trims += 1


#: Closed connections before a trim is considered, and the least seconds between two trims.
TRIM_AFTER = 256
TRIM_INTERVAL = 5.0


def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None (another C library, or no ctypes)."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError, ImportError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim

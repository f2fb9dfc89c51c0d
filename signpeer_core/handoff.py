"""Trips to a worker thread on hot paths, for about half of anyio's cost.

``anyio.to_thread.run_sync`` takes, per call, a checkpoint (one more turn of the event loop), its
capacity limiter, a cancel scope and a ``queue.Queue`` put (a ``Condition.notify`` in Python): about
75–95 µs of CPU per trip on the project machine, against 25–45 µs for the hand-off below (a C
``SimpleQueue`` put, and ``call_soon_threadsafe`` back). The calls of a signing request that must
leave the event loop use it: a blocking token's signature (``CryptoToken.run_blocking``), and the
one-time plugin's key, CSR and queue write and its CA peer's answers. Administration and other
calls that are not per signature keep ``anyio.to_thread.run_sync``.

:func:`submit` runs ``fn(*args)`` in one of this process's hand-off threads (started as needed,
up to :data:`MOST_THREADS`; they wait on one queue) in a copy of the caller's context, as anyio
does, and returns a future of the event loop. :func:`run` waits for it as ``run_sync`` does by
default: a cancellation (client gone, shutdown) is taken once the call has ended, never in the
middle, so what the call did (a signature, a claim, an answer) is seen by the code that follows.
Plugins reach both through ``signpeer_core.api`` (``run_in_thread``, ``submit_to_thread``).
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Hand-off threads of one process at most (anyio's default limiter allows 40 threads; these
#: calls are short: HSM and database calls of a few milliseconds).
MOST_THREADS = 16

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", contextvars.Context, Callable[..., Any], tuple[Any, ...]]


class _Threads:
    """Threads started as needed, each taking jobs from one queue until the process ends."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.started = 0
        self.idle = 0  # threads waiting for a job
        self.queued = 0  # jobs put and not yet taken

    def put(self, job: _Job) -> None:
        with self.lock:
            self.queued += 1
            start = self.queued > self.idle and self.started < self.most
            if start:
                self.started += 1
        self.jobs.put(job)
        if start:  # every queued job has a thread of its own, up to `most`
            threading.Thread(target=self._work, name=f"signpeer-handoff-{self.started}", daemon=True).start()

    def _work(self) -> None:
        get, lock = self.jobs.get, self.lock
        while True:
            with lock:
                self.idle += 1
            loop, future, context, fn, args = get()
            with lock:
                self.idle -= 1
                self.queued -= 1
            try:
                result = context.run(fn, *args)
            except BaseException as exc:  # to the awaiting task, as the call raised it
                _deliver(loop, future, None, exc)
            else:
                _deliver(loop, future, result, None)
            del loop, future, context, fn, args  # not kept alive while this thread waits


def _deliver(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any,
             exc: BaseException | None) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, result, exc)
    except RuntimeError:  # the loop closed meanwhile (shutdown): nobody waits any more
        pass


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


_THREADS = _Threads(MOST_THREADS)


def submit(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """``fn(*args)`` in a hand-off thread; the future (of the running loop) of what it returns or raises."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    _THREADS.put((loop, future, contextvars.copy_context(), fn, args))
    return future


async def run(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a hand-off thread, waited for to its end even when the caller is cancelled
    (the cancellation is raised then), as ``anyio.to_thread.run_sync`` does by default."""
    future = submit(fn, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                continue
        raise

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
default: a cancellation (client gone, shutdown, an anyio cancel scope) of a call still queued
drops the call (it never runs, as anyio's limiter wait is given up); of a call that has started
it is taken once the call has ended, never in the middle, so what the call did (a signature, a
claim, an answer) is seen by the code that follows; the wait meanwhile is shielded, not a loop.
Plugins reach both through ``signpeer_core.api`` (``run_in_thread``, ``submit_to_thread``).
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

#: Hand-off threads of one process at most, started as calls need them (anyio's default limiter
#: allows 40 threads too; these calls are short: HSM and database calls of a few milliseconds).
MOST_THREADS = 40

#: A job's state: queued, then started by a thread or given up by its caller (never both).
_QUEUED, _STARTED, _ABANDONED = 0, 1, 2


class _Job:
    __slots__ = ("loop", "future", "context", "fn", "args", "state")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], context: contextvars.Context,
                 fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.loop, self.future, self.context, self.fn, self.args = loop, future, context, fn, args
        self.state = _QUEUED


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
        if start:  # every queued job has a thread of its own, up to `most`
            try:
                threading.Thread(target=self._work, name=f"signpeer-handoff-{self.started}", daemon=True).start()
            except RuntimeError:  # "can't start new thread": the job waits for a running one, if any
                with self.lock:
                    self.started -= 1
                    alone = self.started == 0
                    if alone:
                        self.queued -= 1
                if alone:
                    raise
        self.jobs.put(job)

    def _work(self) -> None:
        get, lock = self.jobs.get, self.lock
        while True:
            with lock:
                self.idle += 1
            job = get()
            with lock:
                self.idle -= 1
                self.queued -= 1
                run = job.state == _QUEUED
                if run:
                    job.state = _STARTED
            if run:
                try:
                    result = job.context.run(job.fn, *job.args)
                except BaseException as exc:  # to the awaiting task, as the call raised it
                    _deliver(job, None, exc)
                else:
                    _deliver(job, result, None)
            del job  # not kept alive while this thread waits

    def abandon(self, job: _Job) -> bool:
        """Give up a job its caller no longer waits for: True when it had not started (it never will)."""
        with self.lock:
            if job.state != _QUEUED:
                return False
            job.state = _ABANDONED
            return True


def _deliver(job: _Job, result: Any, exc: BaseException | None) -> None:
    try:
        job.loop.call_soon_threadsafe(_settle, job.future, result, exc)
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


def _submit(fn: Callable[..., Any], args: tuple[Any, ...]) -> _Job:
    loop = asyncio.get_running_loop()
    job = _Job(loop, loop.create_future(), contextvars.copy_context(), fn, args)
    _THREADS.put(job)
    return job


def submit(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """``fn(*args)`` in a hand-off thread; the future (of the running loop) of what it returns or
    raises. The call runs even if nobody awaits the future any more (the caller decides)."""
    return _submit(fn, args).future


async def run(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a hand-off thread, as ``anyio.to_thread.run_sync`` runs it by default: a
    caller cancelled while the call is queued gives it up (it never runs); once the call has
    started, the caller waits for its end and the cancellation is raised then."""
    job = _submit(fn, args)
    future: asyncio.Future[T] = job.future
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if _THREADS.abandon(job):
            raise
        with anyio.CancelScope(shield=True):  # an anyio scope would otherwise cancel every turn of the loop
            while not future.done():
                try:
                    await asyncio.wait([future])
                except asyncio.CancelledError:  # a plain task.cancel() again: keep waiting for the call's end
                    continue
        raise

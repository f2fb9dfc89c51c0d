"""The hand-off to threads of hot paths (signpeer_core.handoff): results, errors and context vars come back as from
``anyio.to_thread.run_sync``, a cancelled caller still waits for the call's end, and more calls
at once than threads all finish."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from signpeer_core import handoff

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def test_result_error_thread_and_context() -> None:
    async def main() -> None:
        request_id.set("r-42")
        name, seen = await handoff.run(lambda: (threading.current_thread().name, request_id.get()))
        assert name.startswith("signpeer-handoff-") and seen == "r-42"
        with pytest.raises(KeyError, match="missing"):
            await handoff.run({}.__getitem__, "missing")
        assert await handoff.submit(sum, (1, 2, 3)) == 6

    asyncio.run(main())


def test_a_cancelled_caller_waits_until_the_call_has_ended() -> None:
    started, release, ended = threading.Event(), threading.Event(), threading.Event()

    def call() -> str:
        started.set()
        release.wait(30)
        ended.set()
        return "done"

    async def main() -> None:
        task = asyncio.ensure_future(handoff.run(call))
        while not started.is_set():
            await asyncio.sleep(0.001)
        task.cancel()
        await asyncio.sleep(0)
        assert not task.done()  # still waiting for the call, as anyio's run_sync does
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ended.is_set()  # the cancellation came only after the call's end

    asyncio.run(main())


def test_more_calls_than_threads_all_finish() -> None:
    barrier = threading.Barrier(4, timeout=30)

    async def main() -> list[int]:
        # Four calls that must run at the same time (each waits for the others): needs four threads.
        return list(await asyncio.gather(*(handoff.run(lambda i=i: barrier.wait() * 0 + i) for i in range(4)),
                                         *(handoff.run(int, str(i)) for i in range(3 * handoff.MOST_THREADS))))

    results = asyncio.run(main())
    assert results == [0, 1, 2, 3] + list(range(3 * handoff.MOST_THREADS))


def test_a_caller_cancelled_while_its_call_is_queued_gives_it_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handoff, "_THREADS", handoff._Threads(1))  # one thread: the second call queues
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def busy() -> None:
        started.set()
        release.wait(30)

    async def main() -> None:
        first = asyncio.ensure_future(handoff.run(busy))
        while not started.is_set():
            await asyncio.sleep(0.001)
        queued = asyncio.ensure_future(handoff.run(ran.append, "queued call ran"))
        await asyncio.sleep(0)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued  # at once: the call had not started
        release.set()
        await first
        assert await handoff.run(ran.append, "next call") is None  # the thread took the given-up job and went on

    asyncio.run(main())
    assert ran == ["next call"]


def test_an_anyio_cancel_scope_waits_for_a_started_call_without_spinning() -> None:
    import time

    import anyio

    release = threading.Event()
    started = threading.Event()

    def call() -> str:
        started.set()
        release.wait(30)
        return "done"

    async def main() -> float:
        loop_cpu = time.thread_time()
        with anyio.move_on_after(0.01) as scope:
            asyncio.get_running_loop().call_later(0.5, release.set)
            await handoff.run(call)
        assert scope.cancelled_caught and release.is_set()  # cancelled, and only after the call's end
        return time.thread_time() - loop_cpu

    spent = asyncio.run(main())
    assert started.is_set()
    assert spent < 0.2, f"the event loop's thread spent {spent:.3f} s of CPU waiting 0.5 s for the call"


def test_a_thread_that_cannot_start_fails_the_call_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handoff, "_THREADS", handoff._Threads(4))

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        asyncio.run(handoff.run(int, "1"))
    assert handoff._THREADS.started == 0 and handoff._THREADS.queued == 0

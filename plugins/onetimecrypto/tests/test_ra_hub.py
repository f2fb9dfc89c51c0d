"""The RA hub's wake-ups in one process: one claimer per queued request, the claimers of that
queue only, every claimer after a reconnection; an answer recorded here reaches its waiter with
the row (no read), one heard from another process without."""

from __future__ import annotations

import asyncio

from signpeer_onetimecrypto.rahub import RAHub
from signpeer_onetimecrypto.raqueue import ORIGIN_SEPARATOR, RaRequest


def row(rid: str, state: str = "answered") -> RaRequest:
    return RaRequest(id=rid, queue="CA", worker_id=2, worker="OneTime", request="{}", state=state, created=1.0,
                     deadline=100.0, claimed_at=2.0, claimed_by="CN=CA", claims=1, answered_at=3.0,
                     answered_by="CN=CA", chain="PEM", error=None)


async def settle() -> None:
    """Let the wake-ups (``call_soon_threadsafe``) run."""
    for _ in range(3):
        await asyncio.sleep(0)


def test_a_queued_request_wakes_one_waiting_claimer_of_its_queue_in_turn() -> None:
    async def run() -> None:
        hub = RAHub()
        every = [hub.claimer_event(), hub.claimer_event()]
        other = hub.claimer_event(["OtherCA"])
        mine = hub.claimer_event(["CA", "ThirdCA"])
        events = (*every, other, mine)

        def woken() -> list[bool]:
            return [e.is_set() for e in events]

        async def waiting(*chosen: asyncio.Event) -> list[asyncio.Task[None]]:
            """The given claimers wait (as the claim route does between two looks)."""
            tasks = [asyncio.create_task(hub.wait_for_work(e, 30)) for e in chosen]
            await settle()
            return tasks

        async def ended(tasks: list[asyncio.Task[None]]) -> None:
            for e in events:
                e.set()
            await asyncio.gather(*tasks)
            for e in events:
                e.clear()

        tasks = await waiting(*events)
        hub.submitted("CA")
        await settle()
        assert woken() == [True, False, False, False]  # the longest waiting of those serving CA
        hub.submitted("CA")
        await settle()
        assert woken() == [True, True, False, False]  # the next one: the first is no longer waiting
        hub.submitted("OtherCA")
        await settle()
        assert woken() == [True, True, True, False]  # never a claimer of other queues only
        await ended(tasks)

        # Nobody waits (all busy claiming or answering): every claimer of the queue is told, so
        # none goes back to waiting without a look.
        hub.submitted("CA")
        await settle()
        assert woken() == [True, True, False, True]
        for e in events:
            e.clear()

        tasks = await waiting(*events[1:])
        hub.drop_claimer(every[0])
        hub.submitted(None)  # reconnected: anything may have been missed, everyone looks
        await settle()
        assert woken() == [False, True, True, True]
        await ended(tasks)

    asyncio.run(run())


def test_a_woken_claimer_is_not_picked_again_before_it_looked() -> None:
    async def run() -> None:
        hub = RAHub()
        first, second = hub.claimer_event(), hub.claimer_event()
        tasks = [asyncio.create_task(hub.wait_for_work(e, 30)) for e in (first, second)]
        await settle()
        hub.submitted("CA")
        await settle()
        assert first.is_set() and not second.is_set()
        # The first goes back to waiting before it took its wake (as a claim route can): a second
        # request must wake the second claimer, not be absorbed by the first (which claims one).
        tasks.append(asyncio.create_task(hub.wait_for_work(first, 30)))
        await settle()
        hub.submitted("CA")
        await settle()
        assert second.is_set()
        assert hub.take_wake(first) and not first.is_set()
        assert not hub.take_wake(first)  # taken
        for e in (first, second):
            e.set()
        await asyncio.gather(*tasks)

    asyncio.run(run())


def test_an_answer_recorded_here_hands_its_row_to_the_waiter() -> None:
    async def run() -> None:
        hub = RAHub()
        event = hub.answer_event("r1")
        assert hub.answer_of("r1") is None
        assert hub.answered("r1", row("r1"))  # handed: the answer needs no notification
        await asyncio.wait_for(event.wait(), 5)
        answered = hub.answer_of("r1")
        assert answered is not None and answered.chain == "PEM"
        hub.forget("r1")
        assert hub.answer_of("r1") is None

        # Heard from another process (the notification's payload only), or a withdrawal: the
        # waiter is woken and reads the row itself.
        other = hub.answer_event("r2")
        hub._on_answered("r2")
        await asyncio.wait_for(other.wait(), 5)
        assert hub.answer_of("r2") is None
        assert not hub.answered("r2", row("r2", state="expired"))
        assert hub.answer_of("r2") is None
        # No waiter here (it is in the process that queued the request): notify it.
        assert not hub.answered("r3", row("r3"))

    asyncio.run(run())


def test_a_process_skips_the_notification_of_its_own_submission() -> None:
    async def run() -> None:
        hub = RAHub()
        claimer = hub.claimer_event()
        hub._on_submitted(f"CA{ORIGIN_SEPARATOR}{hub.origin}")  # its own: its claimers were woken already
        await settle()
        assert not claimer.is_set()
        hub._on_submitted(f"CA{ORIGIN_SEPARATOR}another-process")
        await settle()
        assert claimer.is_set()
        claimer.clear()
        hub._on_submitted("CA")  # an older node's payload: the queue alone
        await settle()
        assert claimer.is_set()

    asyncio.run(run())


def test_a_request_queued_here_is_handed_to_a_waiting_claimer_of_its_queue() -> None:
    async def run() -> None:
        hub = RAHub()
        anonymous = hub.claimer_event(["CA"])  # no CA peer named: woken, never handed a request
        other = hub.claimer_event(["OtherCA"], "CN=other")
        mine = hub.claimer_event(["CA"], "CN=CA peer")
        assert hub.reserve("CA") is None  # nobody waits yet
        tasks = [asyncio.create_task(hub.wait_for_work(e, 30)) for e in (anonymous, other, mine)]
        await settle()
        waker = hub.reserve("CA")
        assert waker is not None and waker.claimer == "CN=CA peer"
        assert hub.reserve("CA") is None  # picked: not picked twice
        handed = row("h1", state="claimed")
        assert hub.hand(waker, handed)
        await settle()
        assert tasks[2].done() and not tasks[0].done() and not tasks[1].done()
        assert hub.take_handed(mine) == [handed] and hub.take_handed(mine) == []
        assert hub.drop_claimer(mine) == []
        for task in tasks[:2]:
            task.cancel()

    asyncio.run(run())


def test_a_hand_off_to_a_claimer_that_stopped_waiting_is_given_back() -> None:
    async def run() -> None:
        hub = RAHub()
        event = hub.claimer_event(None, "CN=CA peer")
        task = asyncio.create_task(hub.wait_for_work(event, 30))
        await settle()
        waker = hub.reserve("CA")
        assert waker is not None
        assert hub.close_claimer(event) == []  # its wait ended before the hand-off came
        assert not hub.hand(waker, row("h1", state="claimed"))  # the submitter gives it back
        assert hub.take_handed(event) == []
        task.cancel()
        # Handed but never taken (the claim ended otherwise): drop_claimer returns it to give back.
        second = hub.claimer_event(None, "CN=CA peer")
        task = asyncio.create_task(hub.wait_for_work(second, 30))
        await settle()
        waker = hub.reserve("CA")
        assert waker is not None and hub.hand(waker, row("h2", state="claimed"))
        assert [r.id for r in hub.drop_claimer(second)] == ["h2"]
        await task

    asyncio.run(run())


def test_hand_offs_record_the_polls_of_a_ca_peer_at_most_every_interval() -> None:
    from signpeer_onetimecrypto.rahub import POLL_RECORD_INTERVAL

    hub = RAHub()
    assert hub.polls_due("CN=CA", 100.0) == 1
    assert hub.polls_due("CN=CA", 100.1) == 0 and hub.polls_due("CN=CA", 100.2) == 0
    assert hub.polls_due("CN=other", 100.2) == 1
    assert hub.polls_due("CN=CA", 100.0 + POLL_RECORD_INTERVAL) == 3


def test_another_claimer_waiting_for_the_same_queues_spares_a_claim_with_answers_its_look() -> None:
    """``another_waits``: only a claimer that waits (armed, not yet woken or picked) for every one
    of the queues counts; the asking claimer itself does not."""
    async def run() -> None:
        hub = RAHub()
        mine = hub.claimer_event(["CA"], "CN=CA peer")
        assert not hub.another_waits(mine, ["CA"])  # nobody else
        other = hub.claimer_event(["OtherCA"], "CN=CA peer")
        tasks = [asyncio.create_task(hub.wait_for_work(other, 30))]
        await settle()
        assert not hub.another_waits(mine, ["CA"])  # waits for another queue only
        every = hub.claimer_event(None, "CN=other peer")
        assert not hub.another_waits(mine, ["CA"])  # registered, still looking: not waiting yet
        tasks.append(asyncio.create_task(hub.wait_for_work(every, 30)))
        await settle()
        assert hub.another_waits(mine, ["CA"]) and hub.another_waits(mine, None)
        assert not hub.another_waits(every, None)  # itself does not count; `other` serves OtherCA only
        hub.submitted("CA")  # picks the waiting claimer of CA: it looks now, it no longer waits
        await settle()
        assert tasks[1].done() and not hub.another_waits(mine, ["CA"])
        tasks[0].cancel()

    asyncio.run(run())

"""The RA queue's table, without a server: states, claim order, leases, deadlines, answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from signpeer_core.storage import open_store
from signpeer_onetimecrypto.raqueue import RaQueue, migration_source


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[RaQueue]:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", [migration_source()])
    yield RaQueue(store.database)
    store.close()


def submit(queue: RaQueue, rid: str, created: float, deadline: float = 100.0, name: str = "CA") -> None:
    queue.submit(rid, name, 2, "OneTime", '{"csr": "..."}', created, deadline)


def test_claims_oldest_first_within_the_limit_and_records_the_poller(queue: RaQueue) -> None:
    for rid, created in (("c", 3.0), ("a", 1.0), ("b", 2.0)):
        submit(queue, rid, created)
    submit(queue, "other", 0.5, name="OtherCA")
    assert queue.has_work(["CA"], now=10.0, lease=30.0)
    claimed = queue.claim(["CA"], "CN=CA peer", now=10.0, lease=30.0, limit=2)
    assert [(r.id, r.state, r.claimed_by, r.claims, r.claimed_at) for r in claimed] == [
        ("a", "claimed", "CN=CA peer", 1, 10.0), ("b", "claimed", "CN=CA peer", 1, 10.0)]
    assert [r.id for r in queue.claim(None, "CN=CA peer", now=11.0, lease=30.0, limit=10)] == ["other", "c"]
    assert not queue.has_work(None, now=12.0, lease=30.0)
    pollers = queue.pollers()
    assert [(p.identity, p.queues, p.first_poll, p.last_poll, p.polls) for p in pollers] == [
        ("CN=CA peer", "*", 10.0, 11.0, 2)]


def test_an_unanswered_claim_is_offered_again_after_its_lease(queue: RaQueue) -> None:
    submit(queue, "r1", 1.0)
    assert [r.id for r in queue.claim(None, "peer A", now=10.0, lease=5.0, limit=5)] == ["r1"]
    assert queue.claim(None, "peer B", now=14.0, lease=5.0, limit=5) == []
    assert not queue.has_work(None, now=14.0, lease=5.0) and queue.has_work(None, now=15.0, lease=5.0)
    again = queue.claim(None, "peer B", now=15.0, lease=5.0, limit=5)
    assert [(r.id, r.claimed_by, r.claims) for r in again] == [("r1", "peer B", 2)]


def test_nothing_is_claimed_past_its_deadline(queue: RaQueue) -> None:
    submit(queue, "late", 1.0, deadline=10.0)
    assert not queue.has_work(None, now=10.0, lease=5.0)
    assert queue.claim(None, "peer", now=10.0, lease=5.0, limit=5) == []
    assert [r.effective_state(10.0) for r in queue.requests()] == ["expired"]
    assert [r.id for r in queue.requests(states=["expired"], now=10.0)] == ["late"]
    assert queue.requests(states=["pending"], now=10.0) == []


def test_one_answer_wins_and_late_answers_are_refused(queue: RaQueue) -> None:
    submit(queue, "r1", 1.0, deadline=50.0)
    queue.claim(None, "peer", now=2.0, lease=5.0, limit=5)
    accepted, row = queue.answer("r1", "CN=CA", now=3.0, chain="PEM", error=None)
    assert accepted and row is not None
    assert (row.state, row.answered_by, row.answered_at, row.chain, row.error) == ("answered", "CN=CA", 3.0, "PEM", None)
    accepted, row = queue.answer("r1", "CN=Other", now=4.0, chain=None, error="refused")
    assert not accepted and row is not None and row.answered_by == "CN=CA"
    assert queue.answer("unknown", "CN=CA", now=4.0, chain="PEM", error=None) == (False, None)
    submit(queue, "r2", 5.0, deadline=6.0)
    assert queue.answer("r2", "CN=CA", now=6.0, chain="PEM", error=None)[0] is False  # past its deadline


def test_withdrawn_requests_expire_and_purge_removes_old_closed_ones(queue: RaQueue) -> None:
    submit(queue, "w", 1.0)
    assert queue.withdraw("w", now=2.0, reason="the signing request stopped waiting")
    assert not queue.withdraw("w", now=3.0, reason="again")
    row = queue.request("w")
    assert row is not None and (row.state, row.error, row.answered_at) == (
        "expired", "the signing request stopped waiting", 2.0)
    submit(queue, "open", 1.5, deadline=1000.0)
    submit(queue, "young", 50.0)
    assert queue.purge(before=10.0) == 1
    assert sorted(r.id for r in queue.requests()) == ["open", "young"]
    assert [r.id for r in queue.requests(limit=1)] == ["young"]


def test_a_queue_per_request_reuses_the_statements_of_its_database(queue: RaQueue) -> None:
    """The routes make a RaQueue for each call: its statements are compiled once per database."""
    again = RaQueue(queue.database)
    assert again._poll is queue._poll and again._has_work_any is queue._has_work_any


def test_a_request_handed_to_a_waiting_claim_is_queued_claimed_and_can_be_given_back(queue: RaQueue) -> None:
    row = queue.submit_claimed("h1", "CA", 2, "OneTime", '{"csr": "..."}', 1.0, 100.0, claimer="CN=CA peer",
                               lease_start=1.0, polls=3, queues=["CA"])
    stored = queue.request("h1")
    assert stored == row
    assert (row.state, row.claimed_by, row.claimed_at, row.claims) == ("claimed", "CN=CA peer", 1.0, 1)
    # Claimed for its lease like any claim: nobody else gets it meanwhile; offered again after it.
    assert queue.claim(None, "CN=other", now=5.0, lease=10.0, limit=5) == []
    assert not queue.has_work(None, now=5.0, lease=10.0) and queue.has_work(None, now=11.0, lease=10.0)
    polled = {p.identity: (p.queues, p.last_poll, p.polls) for p in queue.pollers()}
    assert polled["CN=CA peer"] == ("CA", 1.0, 3)
    # Given back (the claim stopped waiting before it took it): pending again, its claim not counted.
    assert not queue.unclaim("h1", "CA", "CN=other")  # only by the claimer it was handed to
    assert queue.unclaim("h1", "CA", "CN=CA peer")
    assert not queue.unclaim("h1", "CA", "CN=CA peer")
    again = queue.claim(None, "CN=other", now=5.0, lease=10.0, limit=5)
    assert [(r.id, r.claimed_by, r.claims) for r in again] == [("h1", "CN=other", 1)]
    # Without polls to record, the poller row is not written.
    queue.submit_claimed("h2", "CA", 2, "OneTime", "{}", 2.0, 100.0, claimer="CN=third", lease_start=2.0)
    assert [p.identity for p in queue.pollers()] == ["CN=other", "CN=CA peer"]


def test_a_claim_records_the_polls_it_is_given_and_none_with_zero(queue: RaQueue) -> None:
    """The claim route records a CA peer's polls at most once a second (``RAHub.polls_due``):
    a claim then runs its claim statement alone, or records the polls counted since."""
    submit(queue, "p1", 1.0)
    submit(queue, "p2", 2.0)
    assert [r.id for r in queue.claim(None, "CN=CA peer", now=10.0, lease=30.0, limit=1, polls=0)] == ["p1"]
    assert queue.pollers() == []  # claimed, no poll written
    assert [r.id for r in queue.claim(["CA"], "CN=CA peer", now=10.5, lease=30.0, limit=1, polls=4)] == ["p2"]
    assert [(p.identity, p.queues, p.last_poll, p.polls) for p in queue.pollers()] == [("CN=CA peer", "CA", 10.5, 4)]


def test_an_answer_handed_to_its_waiter_here_sends_no_notification(queue: RaQueue) -> None:
    """Only the process that queued a request waits for its answer: when the answer reaches that
    waiter directly (``accepted_first`` says so), nobody needs the ANSWERED notification; when it
    does not (the waiter is in another process), it is sent as before."""
    from signpeer_onetimecrypto.raqueue import ANSWERED

    for rid in ("here", "elsewhere"):
        submit(queue, rid, 1.0)
    database = queue.database
    sent: list[tuple[str, str]] = []
    notify = database.notify

    def recording(channel: str, payload: str = "", conn: object = None) -> None:
        sent.append((channel, payload))
        notify(channel, payload)

    database.notify = recording  # type: ignore[method-assign]  # records, then notifies for real
    try:
        handed: list[str] = []
        accepted, row = queue.answer("here", "CN=CA", now=3.0, chain="PEM", error=None,
                                     accepted_first=lambda r: handed.append(r.id) is None)
        assert accepted and row is not None and row.state == "answered" and handed == ["here"]
        assert sent == []
        accepted, _ = queue.answer("elsewhere", "CN=CA", now=3.0, chain="PEM", error=None,
                                   accepted_first=lambda r: False)
        assert accepted and sent == [(ANSWERED, "elsewhere")]
        accepted, _ = queue.answer("elsewhere", "CN=CA", now=4.0, chain="PEM", error=None,
                                   accepted_first=lambda r: True)
        assert not accepted and sent == [(ANSWERED, "elsewhere")]  # refused: nothing to tell
    finally:
        del database.notify  # type: ignore[method-assign]

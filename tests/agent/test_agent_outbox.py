"""TaskOutbox (otherix.agent.outbox): progress throttling, outcome retries, refusals.

``pump()`` is driven by hand with a fake clock; one test runs the real sender
thread.
"""

from __future__ import annotations

import random
import time

from otherix.agent.outbox import TaskOutbox
from otherix.client.errors import ConnectionRefused, api_error
from otherix.models.heartbeat import TaskUpdate
from support.clock import FakeClock
from support.reporters import SpyReporter


def running(done: int) -> TaskUpdate:
    return TaskUpdate(
        status="running",
        progress=done // 10,
        result={"bytes_done": done, "bytes_total": 1000, "phase": "download"},
    )


SUCCESS = TaskUpdate(status="success", progress=100, result={"vm_id": "x"})


def bytes_done(update: TaskUpdate) -> int:
    assert update.result is not None, update
    return update.result["bytes_done"]


def outbox(reporter: SpyReporter, clock: FakeClock, **kw) -> TaskOutbox:
    return TaskOutbox(
        reporter, "n1", clock=clock, rng=random.Random(1), backoff_initial=1, backoff_max=8, **kw
    )


def test_progress_is_sent_at_most_twice_a_second_and_newest_wins() -> None:
    reporter, clock = SpyReporter(node="n1"), FakeClock(monotonic_start=100.0)
    box = outbox(reporter, clock, interval=0.5)
    for i in range(201):  # the worker reports every 10 ms for 2 s
        box.progress("t1", running(i * 5))
        box.pump()
        clock.advance(0.01)
    times = [bytes_done(u) for _, u in reporter.sent]
    assert 4 <= len(times) <= 5  # 2 s at 0.5 s apart, plus the first at once
    assert times[0] == 0
    assert times == sorted(times)


def test_unsent_progress_is_coalesced_to_the_newest() -> None:
    reporter, clock = SpyReporter(node="n1"), FakeClock(monotonic_start=100.0)
    box = outbox(reporter, clock, interval=0.5)
    box.progress("t1", running(0))
    assert box.pump() is None
    for done in (100, 200, 300):
        box.progress("t1", running(done))
    assert box.pump() == 0.5  # throttled: nothing sent, due in 0.5 s
    clock.advance(0.5)
    box.pump()
    assert [bytes_done(u) for _, u in reporter.sent] == [0, 300]


def test_the_outcome_replaces_unsent_progress_and_later_progress_is_ignored() -> None:
    reporter, clock = SpyReporter(node="n1"), FakeClock(monotonic_start=100.0)
    box = outbox(reporter, clock)
    box.progress("t1", running(0))
    box.pump()
    box.progress("t1", running(500))
    box.finish("t1", SUCCESS)  # not held back by the progress throttle
    box.pump()
    box.progress("t1", running(900))
    clock.advance(5)
    box.pump()
    assert [u.status for _, u in reporter.sent] == ["running", "success"]
    assert box.settled("t1")
    assert box.idle()


def test_a_failed_outcome_report_is_retried_with_backoff_until_accepted() -> None:
    reporter, clock = SpyReporter(node="n1"), FakeClock(monotonic_start=100.0)
    box = outbox(reporter, clock)
    reporter.errors = [ConnectionRefused("down"), api_error(503, "unavailable", "busy", None)]
    box.finish("t1", SUCCESS)
    wait = box.pump()
    assert reporter.calls == 1  # tried once per pump, not in a tight loop
    assert wait is not None
    assert 0.1 <= wait <= 1
    clock.advance(wait)
    wait = box.pump()
    assert reporter.calls == 2
    assert wait is not None
    assert wait <= 2
    assert not box.settled("t1")
    clock.advance(wait)
    assert box.pump() is None
    assert reporter.sent == [("t1", SUCCESS)]
    assert box.settled("t1")


def test_401_is_retried_but_a_refusal_drops_the_report() -> None:
    reporter, clock = SpyReporter(node="n1"), FakeClock(monotonic_start=100.0)
    box = outbox(reporter, clock)
    reporter.errors = [api_error(401, "unauthorized", "who?", None)]
    box.finish("t1", SUCCESS)
    box.pump()
    assert not box.settled("t1")
    clock.advance(10)
    box.pump()
    assert box.settled("t1")

    reporter.errors = [api_error(404, "not_found", "task not found", None)]
    box.finish("t2", SUCCESS)
    assert box.pump() is None
    assert box.settled("t2")
    assert ("t2", SUCCESS) not in reporter.sent


def test_an_internal_error_is_not_retried_at_once_but_the_outcome_is_kept() -> None:
    """500 is permanent (no backoff from 0.5 s), yet the outcome is the only record
    of the work: it is offered again at the backoff cap, never dropped."""
    reporter, clock = SpyReporter(), FakeClock()
    box = outbox(reporter, clock)
    reporter.errors = [api_error(500, "internal", "internal error", None)]
    box.finish("t1", SUCCESS)
    wait = box.pump()
    assert wait is not None
    assert wait >= 8 - 1e-9  # the cap (outbox() sets backoff_max=8)
    assert not box.settled("t1")
    assert reporter.calls == 1
    clock.advance(7)
    box.pump()
    assert reporter.calls == 1  # not before the cap
    clock.advance(1)
    box.pump()
    assert reporter.calls == 2
    assert box.settled("t1")
    assert ("t1", SUCCESS) in reporter.sent


def test_a_failed_progress_report_is_dropped_not_retried() -> None:
    reporter, clock = SpyReporter(node="n1"), FakeClock(monotonic_start=100.0)
    box = outbox(reporter, clock)
    reporter.errors = [ConnectionRefused("down")]
    box.progress("t1", running(1))
    assert box.pump() is None
    assert reporter.calls == 1
    assert box.idle()


def test_forget_drops_reports_of_tasks_no_longer_desired() -> None:
    reporter, clock = SpyReporter(node="n1"), FakeClock(monotonic_start=100.0)
    box = outbox(reporter, clock)
    reporter.errors = [ConnectionRefused("down")]
    box.finish("gone", SUCCESS)
    box.finish("kept", SUCCESS)
    box.pump()
    box.forget({"kept"})
    clock.advance(60)
    box.pump()
    assert [t for t, _ in reporter.sent] == ["kept"]


def test_the_sender_thread_posts_without_being_pumped() -> None:
    reporter = SpyReporter(node="n1")
    box = TaskOutbox(reporter, "n1", interval=0.1).start()
    try:
        box.progress("t1", running(0))
        assert reporter.event.wait(2)
        reporter.event.clear()
        box.finish("t1", SUCCESS)
        deadline = time.monotonic() + 2
        while not box.settled("t1") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [u.status for _, u in reporter.sent] == ["running", "success"]
    finally:
        box.close()

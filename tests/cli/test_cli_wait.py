"""The ``--wait`` poll loop: backoff 0.1 s x1.5 capped at 2 s, never past the deadline."""

from __future__ import annotations

import pytest

from otherix.cli.wait import poll
from support.clock import FakeClock


def test_first_poll_is_immediate_and_done_returns_at_once():
    clock = FakeClock(monotonic_start=0.0)
    outcome = poll(lambda: "ready", lambda v: v == "ready", timeout=60,
                   sleep=clock.sleep, monotonic=clock.monotonic)  # fmt: skip
    assert (outcome.value, outcome.done) == ("ready", True)
    assert clock.sleeps == []


def test_backoff_grows_by_half_and_caps_at_two_seconds():
    clock = FakeClock(monotonic_start=0.0)
    values = iter(["pending"] * 12 + ["ready"])
    outcome = poll(lambda: next(values), lambda v: v == "ready", timeout=60,
                   sleep=clock.sleep, monotonic=clock.monotonic)  # fmt: skip
    assert outcome.done
    assert [round(s, 6) for s in clock.sleeps[:4]] == [0.1, 0.15, 0.225, 0.3375]
    assert max(clock.sleeps) == 2.0
    assert clock.sleeps[-3:] == [2.0, 2.0, 2.0]


def test_timeout_returns_the_last_value_without_oversleeping():
    clock = FakeClock(monotonic_start=0.0)
    fetched: list[float] = []

    def fetch() -> str:
        fetched.append(clock.monotonic())
        return "pending"

    outcome = poll(fetch, lambda v: v == "ready", timeout=1.0,
                   sleep=clock.sleep, monotonic=clock.monotonic)  # fmt: skip
    assert (outcome.value, outcome.done) == ("pending", False)
    assert clock.monotonic() == pytest.approx(1.0)
    assert fetched[-1] == pytest.approx(1.0)  # one last look at the deadline


def test_fetch_errors_propagate():
    clock = FakeClock(monotonic_start=0.0)

    def fetch() -> str:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        poll(fetch, bool, timeout=5, sleep=clock.sleep, monotonic=clock.monotonic)

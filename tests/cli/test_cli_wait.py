"""The ``--wait`` poll loop: backoff 0.1 s x1.5 capped at 2 s, never past the deadline."""

from __future__ import annotations

import pytest

from otherix.cli.wait import poll


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def test_first_poll_is_immediate_and_done_returns_at_once():
    clock = FakeClock()
    outcome = poll(lambda: "ready", lambda v: v == "ready", timeout=60,
                   sleep=clock.sleep, monotonic=clock.monotonic)  # fmt: skip
    assert (outcome.value, outcome.done) == ("ready", True)
    assert clock.sleeps == []


def test_backoff_grows_by_half_and_caps_at_two_seconds():
    clock = FakeClock()
    values = iter(["pending"] * 12 + ["ready"])
    outcome = poll(lambda: next(values), lambda v: v == "ready", timeout=60,
                   sleep=clock.sleep, monotonic=clock.monotonic)  # fmt: skip
    assert outcome.done
    assert clock.sleeps[:4] == [0.1, 0.15, 0.225, 0.3375]
    assert max(clock.sleeps) == 2.0
    assert clock.sleeps[-3:] == [2.0, 2.0, 2.0]


def test_timeout_returns_the_last_value_without_oversleeping():
    clock = FakeClock()
    fetched: list[float] = []

    def fetch() -> str:
        fetched.append(clock.now)
        return "pending"

    outcome = poll(fetch, lambda v: v == "ready", timeout=1.0,
                   sleep=clock.sleep, monotonic=clock.monotonic)  # fmt: skip
    assert (outcome.value, outcome.done) == ("pending", False)
    assert clock.now == pytest.approx(1.0)
    assert fetched[-1] == pytest.approx(1.0)  # one last look at the deadline


def test_fetch_errors_propagate():
    clock = FakeClock()

    def fetch() -> str:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        poll(fetch, bool, timeout=5, sleep=clock.sleep, monotonic=clock.monotonic)

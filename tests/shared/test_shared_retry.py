"""The one retry policy (otherix.retry): delays, jitter, attempts, deadline."""

from __future__ import annotations

import math
import random

import pytest

from otherix.retry import CLI_POLL, FULL, RetryPolicy, agent_backoff, steady


def test_delays_grow_by_factor_up_to_max() -> None:
    policy = RetryPolicy(initial=0.5, factor=2.0, max=4.0)
    assert [policy.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_the_cli_poll_matches_its_documented_schedule() -> None:
    backoff = CLI_POLL.backoff()
    got = [round(backoff.next(), 6) for _ in range(12)]
    assert got[:4] == [0.1, 0.15, 0.225, 0.3375]
    assert got[-1] == 2.0


def test_full_jitter_stays_under_the_ceiling_and_resets() -> None:
    backoff = agent_backoff(0.5, 30.0).backoff(random.Random(7))
    for n in range(40):
        assert 0 <= backoff.next() <= min(30.0, 0.5 * 2**n)
    assert backoff.failures == 40
    assert backoff.ceiling() == 30.0
    backoff.reset()
    assert backoff.ceiling() == 0.5


def test_the_ceiling_never_overflows() -> None:
    assert RetryPolicy(initial=1.0, max=10.0, jitter=FULL).ceiling(5000) == 10.0
    assert RetryPolicy(initial=1.0).ceiling(5000) == math.inf


def test_steady_is_the_interval_plus_or_minus_a_tenth() -> None:
    rng = random.Random(3)
    delays = [steady(30.0).delay(n, rng) for n in range(200)]
    assert all(27.0 <= d <= 33.0 for d in delays)
    assert max(delays) - min(delays) > 3  # it does spread


def test_attempts_and_deadline() -> None:
    policy = RetryPolicy(initial=5.0, attempts=3)
    assert not policy.exhausted(2)
    assert policy.exhausted(3)
    assert not RetryPolicy(initial=5.0).exhausted(10_000)
    timed = CLI_POLL.with_deadline(60)
    assert timed.remaining(100.0, 130.0) == 30.0
    assert CLI_POLL.remaining(100.0, 1e9) == math.inf


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": -1},
        {"initial": 5, "max": 1},
        {"initial": 1, "factor": 0.5},
        {"initial": 1, "jitter": 1.5},
    ],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]

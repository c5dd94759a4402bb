"""Time to full (domain.capacity): the sampling bucket, the least-squares slope,
the minimum of data, a drop restarting the trend, the estimate and pool_filling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from otherix.domain.capacity import (
    DROP_MIN_BYTES,
    Sample,
    Trend,
    bucket_start,
    is_filling,
    slope_per_second,
    trend,
)

GiB = 1 << 30
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = 86400.0
CAP = 100 * GiB
HOUR = 3600.0


def series(used: list[int], step: float = HOUR, capacity: int = CAP) -> list[Sample]:
    return [Sample(T0 + timedelta(seconds=i * step), u, capacity) for i, u in enumerate(used)]


@pytest.mark.parametrize(
    ("now", "interval", "start"),
    [
        pytest.param(T0, 300, T0, id="on-a-boundary"),
        pytest.param(T0 + timedelta(seconds=299.9), 300, T0, id="inside"),
        pytest.param(T0 + timedelta(seconds=300), 300, T0 + timedelta(seconds=300), id="next"),
        pytest.param(T0 + timedelta(seconds=1.5), 1, T0 + timedelta(seconds=1), id="seconds"),
        pytest.param(
            datetime(2026, 3, 1, 13, 2, tzinfo=timezone(timedelta(hours=1))),
            300,
            T0,
            id="other-zone",
        ),
    ],
)
def test_bucket_start(now, interval, start) -> None:
    got = bucket_start(now, interval)
    assert got == start
    assert got.tzinfo is not None


def test_bucket_start_refuses_a_zero_interval() -> None:
    with pytest.raises(ValueError, match="positive"):
        bucket_start(T0, 0)


@pytest.mark.parametrize(
    ("used", "per_second"),
    [
        pytest.param([0, 3600, 7200], 1.0, id="exact-line"),
        pytest.param([100, 100, 100, 100], 0.0, id="flat"),
        pytest.param([7200, 3600, 0], -1.0, id="falling"),
        pytest.param([0, 7200, 3600, 10800], 0.8, id="noisy-fit"),
    ],
)
def test_slope_is_least_squares(used, per_second) -> None:
    assert slope_per_second(series(used)) == pytest.approx(per_second)


def test_slope_needs_two_times() -> None:
    with pytest.raises(ValueError, match="two"):
        slope_per_second(series([1]))
    same = [Sample(T0, 1, CAP), Sample(T0, 2, CAP)]
    with pytest.raises(ValueError, match="two different times"):
        slope_per_second(same)


@pytest.mark.parametrize(
    ("used", "step", "interval", "state", "samples"),
    [
        pytest.param([], HOUR, HOUR, "unknown", 0, id="none"),
        pytest.param([GiB, 2 * GiB], HOUR, HOUR, "unknown", 2, id="two-samples"),
        pytest.param(
            [GiB, 2 * GiB, 3 * GiB], HOUR / 2, HOUR, "unknown", 3, id="three-within-one-interval"
        ),
        pytest.param([GiB, 2 * GiB, 3 * GiB], HOUR, HOUR, "filling", 3, id="three-over-two"),
        pytest.param([5 * GiB] * 4, HOUR, HOUR, "not_filling", 4, id="flat"),
        pytest.param([5 * GiB, 3 * GiB, 3 * GiB + 1], HOUR, HOUR, "unknown", 2, id="drop-restarts"),
        pytest.param(
            [5 * GiB, 5 * GiB - 1000, 5 * GiB - 2000], HOUR, HOUR, "not_filling", 3,
            id="a-slow-fall-is-not-a-drop",
        ),
    ],
)  # fmt: skip
def test_state_and_minimum(used, step, interval, state, samples) -> None:
    t = trend(series(used, step), interval)
    assert t.state == state
    assert t.samples == samples
    if state == "unknown":
        assert t.bytes_per_day is None
        assert t.days_to_full is None


def test_time_to_full_is_available_over_the_slope() -> None:
    # +1 GiB an hour = 24 GiB a day; at the last sample 100 - 12 = 88 GiB free
    t = trend(series([10 * GiB, 11 * GiB, 12 * GiB]), HOUR)
    assert t.state == "filling"
    assert t.bytes_per_day == pytest.approx(24 * GiB)
    assert t.available_bytes == 88 * GiB
    assert t.days_to_full == pytest.approx(88 / 24)
    assert t.full_at == T0 + timedelta(hours=2) + timedelta(days=88 / 24)


def test_a_deleted_big_file_restarts_the_trend() -> None:
    # filling at 1 GiB/h, then 30 GiB deleted, then filling at 2 GiB/h again
    used = [40, 41, 42, 43, 13, 15, 17, 19]
    t = trend(series([u * GiB for u in used]), HOUR)
    assert t.state == "filling"
    assert t.samples == 4  # from the drop on
    assert t.bytes_per_day == pytest.approx(48 * GiB)
    # the whole window fitted would have said "shrinking"
    assert slope_per_second(series([u * GiB for u in used])) < 0


def test_a_drop_under_the_minimum_bytes_is_noise() -> None:
    # a tiny filesystem: 1% of 10 MiB is 100 KiB, but a drop needs DROP_MIN_BYTES too
    small = 10 << 20
    used = [5 << 20, (5 << 20) - DROP_MIN_BYTES // 2, 6 << 20]
    t = trend(series(used, capacity=small), HOUR)
    assert t.samples == 3


def test_full_already_and_unsorted_input() -> None:
    full = series([CAP - 2, CAP - 1, CAP + 5])  # used over capacity (reserved blocks)
    t = trend(list(reversed(full)), HOUR)
    assert t.state == "filling"
    assert t.available_bytes == 0
    assert t.days_to_full == 0


def test_a_tiny_slope_has_no_calendar_date() -> None:
    t = trend(series([0, 0, 1], step=1.0, capacity=1 << 62), 1.0)
    assert t.state == "filling"
    assert t.days_to_full is not None
    assert t.days_to_full > 1e9
    assert t.full_at is None


@pytest.mark.parametrize(
    ("t", "warn", "filling"),
    [
        pytest.param(Trend("filling", 3, 1.0, 10, 6.9), 7, True, id="under"),
        pytest.param(Trend("filling", 3, 1.0, 10, 7.0), 7, False, id="at"),
        pytest.param(Trend("filling", 3, 1.0, 10, 30.0), 7, False, id="far"),
        pytest.param(Trend("not_filling", 3, -1.0, 10), 7, False, id="shrinking"),
        pytest.param(Trend("unknown", 1), 7, False, id="unknown"),
    ],
)
def test_pool_filling_rule(t, warn, filling) -> None:
    assert is_filling(t, warn) is filling

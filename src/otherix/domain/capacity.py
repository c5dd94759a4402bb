"""Time to full (issue 16.6), pure: the trend of a pool instance's used bytes and
when it fills.

Owns the sampling bucket (one sample per pool instance per
``capacity.sample_interval``: :func:`bucket_start`), the least-squares slope of
used bytes over the trend window, the estimated time to full and the
``pool_filling`` rule. Called by the capacity service
(``api/services/capacity.py``), which reads the samples and shows the result
on the pool views and the history route.

The rules, in the order :func:`trend` applies them:

- **used** is ``capacity - available`` of the filesystem (the sampler stores
  it): what fills is the filesystem, so a pool that shares one with another
  pool (or with anything else) fills when the filesystem does, and two such
  pools show the same trend;
- **a drop restarts the trend**: when used falls by more than
  ``DROP_FRACTION`` of the capacity (at least ``DROP_MIN_BYTES``) from one
  sample to the next (a big file deleted, a VM removed), only the samples
  from that drop on are fitted, so a deletion is neither an outlier that
  bends the fit nor a reason to say "not filling" for the rest of the window;
- **enough data**: at least ``MIN_SAMPLES`` samples (after the last drop)
  spanning at least ``MIN_INTERVALS`` sample intervals; otherwise the state is
  ``unknown`` and there is no estimate;
- **the slope** (bytes/day) is the ordinary least-squares slope of used
  bytes over time; a slope of zero or less is ``not_filling`` (never full);
- **time to full** is the last sample's available bytes (capacity - used)
  over the slope, in days; ``filling`` below ``warn_days`` is the
  ``pool_filling`` condition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

__all__ = [
    "DROP_FRACTION",
    "DROP_MIN_BYTES",
    "MIN_INTERVALS",
    "MIN_SAMPLES",
    "Sample",
    "Trend",
    "bucket_start",
    "is_filling",
    "slope_per_second",
    "trend",
]

MIN_SAMPLES = 3
MIN_INTERVALS = 2
#: a fall of used bytes by more than this share of the capacity restarts the trend
DROP_FRACTION = 0.01
#: ... and by at least this many bytes (tiny test filesystems jitter by a few blocks)
DROP_MIN_BYTES = 1 << 20
DAY = 86400.0

TrendState = Literal["filling", "not_filling", "unknown"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample: when, used bytes (capacity - available), capacity."""

    at: datetime
    used_bytes: int
    capacity_bytes: int


@dataclass(frozen=True, slots=True)
class Trend:
    state: TrendState
    #: samples fitted (those after the last drop in the window)
    samples: int
    #: least-squares slope of used bytes, per day; None with too few samples
    bytes_per_day: float | None = None
    #: available bytes at the last sample
    available_bytes: int | None = None
    #: days until available reaches 0 at the slope; None unless filling
    days_to_full: float | None = None
    #: when it fills at the slope (last sample + days_to_full); None unless filling
    full_at: datetime | None = None


def bucket_start(now: datetime, interval: float) -> datetime:
    """The start of the sampling bucket ``now`` falls in: the time a sample taken
    now is stored under, the same on every replica for the same clock."""
    if interval <= 0:
        raise ValueError("interval must be positive")
    epoch = now.astimezone(UTC).timestamp()
    start = math.floor(epoch / interval) * interval
    return datetime.fromtimestamp(start, UTC)


def _dropped(before: Sample, after: Sample) -> bool:
    fall = before.used_bytes - after.used_bytes
    limit = max(DROP_MIN_BYTES, DROP_FRACTION * max(before.capacity_bytes, after.capacity_bytes))
    return fall > limit


def since_last_drop(samples: Sequence[Sample]) -> list[Sample]:
    """The samples (sorted by time) from the last drop on (all of them without one)."""
    ordered = sorted(samples, key=lambda s: s.at)
    start = 0
    for i in range(1, len(ordered)):
        if _dropped(ordered[i - 1], ordered[i]):
            start = i
    return ordered[start:]


def slope_per_second(samples: Sequence[Sample]) -> float:
    """Ordinary least-squares slope of used bytes over time (bytes/second).

    Needs two samples at different times at least (``ValueError`` otherwise)."""
    if len(samples) < 2:
        raise ValueError("a slope needs two samples")
    t0 = samples[0].at
    xs = [(s.at - t0).total_seconds() for s in samples]
    ys = [float(s.used_bytes) for s in samples]
    mx = sum(xs) / len(xs)
    my = sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("a slope needs samples at two different times")
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def trend(samples: Sequence[Sample], interval: float) -> Trend:
    """The trend of a pool instance's samples in the window (see the module docstring)."""
    fitted = since_last_drop(samples)
    if len(fitted) < MIN_SAMPLES:
        return Trend("unknown", len(fitted))
    span = (fitted[-1].at - fitted[0].at).total_seconds()
    if span < MIN_INTERVALS * interval:
        return Trend("unknown", len(fitted))
    per_day = slope_per_second(fitted) * DAY
    last = fitted[-1]
    available = max(0, last.capacity_bytes - last.used_bytes)
    if per_day <= 0:
        return Trend("not_filling", len(fitted), per_day, available)
    days = available / per_day
    try:
        full_at: datetime | None = last.at + timedelta(days=days)
    except OverflowError:  # a slope of a few bytes a day: beyond the calendar
        full_at = None
    return Trend("filling", len(fitted), per_day, available, days, full_at)


def is_filling(t: Trend, warn_days: float) -> bool:
    """The ``pool_filling`` condition: filling, and full in less than ``warn_days``."""
    return t.state == "filling" and t.days_to_full is not None and t.days_to_full < warn_days

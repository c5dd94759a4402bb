"""Time sources for services: real in production, fake in tests.

Two clocks, for two different questions:

- ``now()``, the wall clock (aware UTC): what is written into rows and shown
  to users, and what every *expiry* is measured against (JWTs, API tokens,
  join and re-enrol tokens, refresh tokens, task leases). An operator who sets
  the clock expects expiries to follow it.
- ``monotonic()``, seconds that only ever go forward at the rate real time
  passes and that a wall-clock step (NTP, an operator's ``date -s``, a VM
  resumed from a snapshot) cannot move. Node liveness ages are measured with
  it (``api/workers/liveness.py``, ``HeartbeatBuffer`` in ``api/deps.py``),
  so a step neither freezes liveness nor marks live nodes unreachable.
  Its origin is arbitrary: only differences mean anything, within one process.

``FakeClock`` lets a test move both (``advance``: time passes) or only the
wall clock (``step``: the clock is set). Its monotonic reading starts at the
real ``time.monotonic()`` unless told otherwise, so a test may swap it into a
running server (``deps.clock = FakeClock(...)``) and the monotonic times the
server recorded before stay comparable.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall-clock time, aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never moved by a wall-clock step."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None, monotonic_start: float | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = time.monotonic() if monotonic_start is None else monotonic_start

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of time pass: both clocks move."""
        if seconds < 0:
            raise ValueError("time does not pass backwards; use step() to set the wall clock")
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    def step(self, seconds: float) -> None:
        """Set the wall clock ``seconds`` forward (negative: back); monotonic time stays."""
        self._now += timedelta(seconds=seconds)

"""The one fake clock of the tests: time moves only when a test (or the code under test) says so.

It speaks every clock seam the code has, so one class serves them all:

- the control plane's ``otherix.api.clock.Clock``: ``now()`` (wall clock,
  aware UTC) and ``monotonic()``;
- the agent's and the CLI's ``monotonic()`` + ``sleep()`` (a fake ``sleep``
  records the delay in ``sleeps`` and advances time instead of waiting);
- a bare ``() -> float`` monotonic source (``LoginGuard``, ``TaskOutbox``):
  calling the clock reads ``monotonic()``.

``advance`` lets time pass (both clocks move); ``step`` sets only the wall
clock, as an operator or NTP would. The monotonic reading starts at the real
``time.monotonic()`` unless ``monotonic_start`` says otherwise, so a test may
seat the clock in a running server (``ApiServer.set_clock(FakeClock(...))``) and the
monotonic times the server recorded before stay comparable. With ``until``
(and a ``stop`` with ``set()``), reaching that monotonic time sets ``stop``:
the agent loop tests end a run that way.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["ClockSeat", "FakeClock"]


class _Stop(Protocol):
    def set(self) -> None: ...


class FakeClock:
    """A clock tests move by hand (see the module docstring for the seams it serves)."""

    def __init__(
        self,
        start: datetime | None = None,
        monotonic_start: float | None = None,
        *,
        until: float | None = None,
        stop: _Stop | None = None,
    ) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = time.monotonic() if monotonic_start is None else monotonic_start
        self.until = until
        self.stop = stop
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def __call__(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of time pass: both clocks move."""
        if seconds < 0:
            raise ValueError("time does not pass backwards; use step() to set the wall clock")
        self._now += timedelta(seconds=seconds)
        self._mono += seconds
        if self.stop is not None and self.until is not None and self._mono >= self.until:
            self.stop.set()

    def step(self, seconds: float) -> None:
        """Set the wall clock ``seconds`` forward (negative: back); monotonic time stays."""
        self._now += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        """Record the delay and let it pass at once (a negative one passes no time)."""
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))


class ClockSeat:
    """The clock a test server's services hold: it reads whichever clock sits in it.

    The composition root hands one clock to every service when it builds them,
    so a test that wants a fake clock in a running server seats it here
    (``ApiServer.set_clock``) instead of replacing the server's clock. Attributes
    other than the two readings (``advance``, ``step``) reach the seated clock.
    """

    def __init__(self, clock: object) -> None:
        self.seated = clock

    def now(self) -> datetime:
        value: datetime = self.seated.now()  # type: ignore[attr-defined]
        return value

    def monotonic(self) -> float:
        value: float = self.seated.monotonic()  # type: ignore[attr-defined]
        return value

    def __getattr__(self, name: str) -> object:
        return getattr(self.seated, name)

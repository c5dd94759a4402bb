"""Time sources for services: the protocol and the real clock (tests bring a fake).

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

Tests use the suite's one fake clock (``tests/support/clock.py``), which
speaks this protocol and lets a test move both clocks (``advance``) or only
the wall clock (``step``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
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

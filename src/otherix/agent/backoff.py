"""Retry pacing and connection-state logging for the agent's loop.

``Backoff`` is exponential backoff with full jitter (the AWS architecture
blog's "full jitter"): the n-th consecutive failure waits a uniform random
time in ``[0, min(cap, initial * 2**n)]``. Many agents losing the same control
plane therefore spread their retries instead of arriving together when it is
back. ``reset()`` after any success.

``Link`` remembers what the loop last knew about its control plane
(``connected``, ``unreachable``, ``unauthorized``, ``gone``, ``rejected``) and
logs only when that changes, so an outage is one warning and one "connected
again", not a line per retry.

Used by ``otherix.agent.daemon`` only.
"""

from __future__ import annotations

import logging
import random

__all__ = ["Backoff", "Link"]


class Backoff:
    def __init__(self, initial: float, cap: float, rng: random.Random) -> None:
        self.initial = initial
        self.cap = cap
        self._rng = rng
        self.failures = 0

    def ceiling(self) -> float:
        """Upper bound of the next delay."""
        # 2**failures overflows a float after ~1000 failures; cap the exponent.
        return float(min(self.cap, self.initial * 2 ** min(self.failures, 62)))

    def next(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        delay = self._rng.uniform(0, self.ceiling())
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


class Link:
    """The control-plane connection state, logged once per change."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self.state = "starting"

    def set(self, state: str, level: int, message: str, *args: object) -> bool:
        """Move to ``state``; log ``message`` only if that is a change. True if it was."""
        if state == self.state:
            return False
        self.state = state
        self._log.log(level, message, *args)
        return True

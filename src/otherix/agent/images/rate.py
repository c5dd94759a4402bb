"""The minimum transfer rate of a download, as a pure rule on (time, bytes) samples.

Owns :class:`RateFloor`: fed the body bytes received so far at regular ticks,
it says when the source has sent less than ``min_rate`` bytes per second,
averaged over the last ``window`` seconds (:class:`TooSlow`, with the rate
seen). The check starts only once a whole window has passed since
:meth:`RateFloor.start`, so a slow start (TCP slow start, a source waking
its disk) is never punished; after that the window slides, so a source that
stalls half-way is caught one window after it stalled. No clock and no
threads here: ``transport.Deadline`` samples it on its watchdog thread and
cuts the connection; ``download`` turns the verdict into
``download_too_slow``. Table-tested with made-up times.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

__all__ = ["RateFloor", "TooSlow", "human_rate"]

_KiB: Final = 1024.0


def human_rate(bytes_per_second: float) -> str:
    """``65536`` -> ``"64 KiB/s"``; ``0.4`` -> ``"0.4 B/s"``."""
    value, unit = bytes_per_second, "B/s"
    for bigger in ("KiB/s", "MiB/s", "GiB/s"):
        if value < _KiB:
            break
        value, unit = value / _KiB, bigger
    return f"{value:.3g} {unit}" if value < 1000 else f"{value:.0f} {unit}"


@dataclass(frozen=True)
class TooSlow:
    """The verdict: ``received`` bytes in the last ``seconds`` (at least the window)."""

    rate: float  # bytes per second over ``seconds``
    seconds: float
    received: int
    min_rate: int
    window: float


class RateFloor:
    """Abort below ``min_rate`` bytes/s averaged over ``window`` s (see the module docstring)."""

    def __init__(self, min_rate: int, window: float) -> None:
        if min_rate <= 0 or window <= 0:
            raise ValueError("min_rate and window must be positive (leave the floor out for none)")
        self.min_rate = min_rate
        self.window = window
        #: how often the watchdog should sample: ten times a window, within [50 ms, 1 s]
        self.tick = min(1.0, max(0.05, window / 10))
        self._start = 0.0
        self._samples: deque[tuple[float, int]] = deque()

    def start(self, now: float, received: int = 0) -> None:
        """(Re)arm the floor: the first check comes one window after ``now``."""
        self._start = now
        self._samples.clear()
        self._samples.append((now, received))

    def check(self, now: float, received: int) -> TooSlow | None:
        """Record ``received`` (total body bytes so far) at ``now``; the verdict, if too slow."""
        samples = self._samples
        samples.append((now, received))
        if now - self._start < self.window:
            return None
        # The base is the newest sample at least one window old; older ones are not needed.
        while len(samples) > 1 and now - samples[1][0] >= self.window:
            samples.popleft()
        since, base = samples[0]
        seconds = now - since
        got = received - base
        rate = got / seconds
        if rate >= self.min_rate:
            return None
        return TooSlow(rate, seconds, got, self.min_rate, self.window)

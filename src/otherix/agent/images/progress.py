"""Rate-limited progress reporting for long image and disk operations.

Owns :class:`Throttle`, which ``download`` and ``disks`` feed with every chunk
and which calls the caller's ``progress(bytes_done, total_or_None)`` at most
once per ``interval`` (0.1 s: ten times a second), plus once at the start
(``0``) and always once at the end. The final call reports completion as
``(done, total)``; when the total was not known up front, it is ``(done, done)``.
A progress callback that raises aborts the operation (the caller's choice).
:class:`Speed` turns the byte counts a callback sees into bytes per second
(the VM task workers put it in their progress reports).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["Progress", "Speed", "Throttle"]

#: ``progress(bytes_done, total_bytes_or_None)``
Progress = Callable[[int, int | None], None]


class Throttle:
    """Forward byte counts to a progress callback, at most once per ``interval``."""

    def __init__(
        self,
        callback: Progress | None,
        total: int | None,
        *,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._callback = callback
        self.total = total
        self._interval = interval
        self._clock = clock
        self._last = clock()
        self._last_done = -1
        if callback is not None:
            self._emit(0, total)

    def _emit(self, done: int, total: int | None) -> None:
        assert self._callback is not None
        self._last_done = done
        self._callback(done, total)

    def update(self, done: int) -> None:
        """Report ``done`` bytes if the last report is at least ``interval`` old."""
        if self._callback is None:
            return
        now = self._clock()
        if now - self._last >= self._interval:
            self._last = now
            self._emit(done, self.total)

    def finish(self, done: int) -> None:
        """Report completion: ``(done, total)``, or ``(done, done)`` if the total was unknown."""
        if self._callback is None:
            return
        self._emit(done, self.total if self.total is not None else done)


class Speed:
    """Bytes per second over the last ``span`` seconds of byte counts (at least ``least``)."""

    def __init__(
        self,
        span: float = 5.0,
        least: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._span, self._least, self._clock = span, least, clock
        self._seen: deque[tuple[float, int]] = deque()

    def update(self, done: int) -> int | None:
        """Record ``done`` bytes now; the rate, once ``least`` seconds of counts are seen."""
        now = self._clock()
        seen = self._seen
        seen.append((now, done))
        while len(seen) > 2 and now - seen[1][0] >= self._span:
            seen.popleft()
        since, before = seen[0]
        if now - since < self._least:
            return None
        return round((done - before) / (now - since))

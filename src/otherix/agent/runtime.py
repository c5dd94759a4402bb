"""Time and shutdown for the agent's loop: the seams that make it testable.

``Clock`` is what the daemon (``otherix.agent.daemon``) sees of time: a
monotonic reading and a ``sleep`` that returns early once the agent is asked
to stop. ``SystemClock`` is the real one; tests pass a fake that advances by
hand, so the loop's logic is tested without sleeping.

``StopToken`` is the shutdown request. ``otherix-agent serve`` installs it as
the SIGTERM/SIGINT handler: the signal sets the token, so the loop finishes
the step it is in (a heartbeat, a reconcile pass) and exits. The only step
that is cut short is a long-poll watch, which may be held open for up to
``control_plane.watch_timeout``: while one is open (``interruptible()``), the
handler also raises ``Interrupted`` in the main thread to abandon it. A watch
changes nothing, so abandoning it loses nothing.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Protocol

__all__ = ["Clock", "Interrupted", "StopToken", "SystemClock"]


class Interrupted(BaseException):
    """Raised into an interruptible wait when the agent is asked to stop.

    A BaseException so that no ``except Exception`` on the way swallows it.
    """


class StopToken:
    """A shutdown request, settable from a signal handler or another thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._interruptible = False

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (at once) when stopping."""
        return self._event.wait(max(0.0, seconds))

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Mark a blocking call the signal handler may abandon with ``Interrupted``."""
        if self._event.is_set():
            raise Interrupted
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def handle_signal(self, signum: int, _frame: FrameType | None) -> None:
        """The SIGTERM/SIGINT handler (runs in the main thread, between bytecodes)."""
        self._event.set()
        if self._interruptible:
            self._interruptible = False
            raise Interrupted

    def install(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        for signum in signals:
            signal.signal(signum, self.handle_signal)


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``; may return early when the agent is stopping."""
        ...


class SystemClock:
    """Real time; ``sleep`` wakes up as soon as ``stop`` is set."""

    def __init__(self, stop: StopToken) -> None:
        self._stop = stop

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

"""The line of ``vm.create`` jobs waiting for a worker: oldest first, a few per image source.

Owns :class:`CreateLine` and the pure choice it makes (:func:`pick`), and
:func:`source_of`, what counts as one image source. ``VmTasks``
(``otherix.agent.vmtasks``) puts every ``vm.create`` job in the line; its
workers ``take`` the oldest job that may start now and call ``done`` when the
try is over. A job may start when

- its ``not_before`` has passed (a retry waits out its backoff here, not in
  a worker), and
- fewer than ``per_source`` jobs of its source are running
  (``tasks.vm_create_per_source``).

So a job whose source is busy stays in line **without holding a worker**,
and the next job of another source goes first: one slow or stalled source
can hold at most ``per_source`` of the node's ``vm_create_workers``, never
all of them (with the defaults, 2 of 4). The rate floor
(``images.min_rate_bytes_per_second``) frees those slots too. A cancelled job
is ``release``-d: it needs no slot and no wait, only a worker to report it.

The source is the image URL's scheme, host and port (``source_of``), taken
before any network: redirect targets are unknown until the fetch, so a
redirecting URL counts as the source it names. A job holds its slot for its
whole try (cache hit, download and disk clone), which keeps the rule simple
and also bounds jobs that queue on the same image behind one slow download.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from otherix.agent.images import ImageError
from otherix.agent.images.transport import parse_url

__all__ = ["CreateLine", "Waiting", "pick", "source_of"]

T = TypeVar("T")


def source_of(url: str) -> str:
    """``https://Images.Example/a/b.img`` -> ``https://images.example:443``.

    A URL the image library would refuse anyway is its own source (it fails
    at once without touching the network).
    """
    try:
        target = parse_url(url)
    except ImageError:
        return url
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{target.scheme}://{host}:{target.port}"


@dataclass(eq=False)
class Waiting(Generic[T]):
    """One job in line: ``source`` None means it needs no slot (a cancelled job)."""

    item: T
    source: str | None
    not_before: float = 0.0


def pick(
    waiting: Sequence[Waiting[T]], running: Mapping[str, int], per_source: int, now: float
) -> tuple[int | None, float | None]:
    """``(index, None)`` of the oldest job that may start at ``now``; else ``(None, wait)``:
    seconds until a job's backoff ends, or None when only a finished job can free a slot."""
    wait: float | None = None
    for index, entry in enumerate(waiting):
        if entry.source is not None and running.get(entry.source, 0) >= per_source:
            continue
        if entry.not_before <= now:
            return index, None
        ahead = entry.not_before - now
        wait = ahead if wait is None else min(wait, ahead)
    return None, wait


class CreateLine(Generic[T]):
    """Jobs waiting for a ``vm.create`` worker (module docstring); thread-safe."""

    def __init__(self, per_source: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if per_source < 1:
            raise ValueError("per_source must be at least 1")
        self._per_source = per_source
        self._clock = clock
        self._cond = threading.Condition()
        self._waiting: list[Waiting[T]] = []
        self._running: dict[str, int] = {}
        self._closed = False

    def put(self, item: T, source: str | None, *, delay: float = 0.0) -> None:
        """Queue ``item`` at the end of the line, startable ``delay`` seconds from now."""
        with self._cond:
            self._waiting.append(Waiting(item, source, self._clock() + delay))
            self._cond.notify_all()

    def release(self, item: T) -> None:
        """``item``, if it is waiting, may start at once and needs no source slot."""
        with self._cond:
            for entry in self._waiting:
                if entry.item is item:
                    entry.source, entry.not_before = None, 0.0
                    self._cond.notify_all()

    def take(self) -> Waiting[T] | None:
        """Block until a job may start, mark its source busy and return it; None once closed."""
        with self._cond:
            while not self._closed:
                index, wait = pick(self._waiting, self._running, self._per_source, self._clock())
                if index is not None:
                    entry = self._waiting.pop(index)
                    if entry.source is not None:
                        self._running[entry.source] = self._running.get(entry.source, 0) + 1
                    return entry
                self._cond.wait(None if wait is None else max(wait, 0.001))
            return None

    def done(self, entry: Waiting[T]) -> None:
        """The try of ``entry`` is over: its source slot is free again."""
        with self._cond:
            if entry.source is not None:
                left = self._running[entry.source] - 1
                if left:
                    self._running[entry.source] = left
                else:
                    del self._running[entry.source]
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every worker; ``take`` returns None from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def running(self) -> dict[str, int]:
        """Jobs running per source, right now (for tests and logs)."""
        with self._cond:
            return dict(self._running)

    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

"""Keyed locks: single flight for cache entries and VM disks.

Owns :class:`KeyedLocks`. The agent's composition root (``otherix.agent.main``)
builds one table per process and passes it to the ``ImageCache`` (key
``(realpath(pool), basename)``) and, through it, to the disk code (key
``(realpath(pool), "vm:<uuid>")``), so single flight holds across every user
in this process. Other processes are not coordinated: one agent owns a
node's pools.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["KeyedLocks"]


class KeyedLocks:
    """One lock per key, created on demand and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._locks: dict[tuple[str, str], tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: tuple[str, str]) -> Iterator[None]:
        with self._mutex:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._mutex:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

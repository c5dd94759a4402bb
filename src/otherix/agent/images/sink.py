"""The write side of a download: hashing and flushing on helper threads.

Owns :class:`Hasher` (sha256 over a small ring of buffers on its own thread;
``hashlib`` releases the GIL, so hashing overlaps the network and the disk)
and :class:`Flusher` (``fdatasync`` on its own thread, so the disk writes
behind the download instead of all at the final ``fsync``). Used by
``download._stream`` only.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading

__all__ = ["Flusher", "Hasher"]


class Flusher:
    """``fdatasync`` on a helper thread, so writeback overlaps the download."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._wake = threading.Event()
        self._done = False
        self.error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="image-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._done:
                return
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                self.error = exc
                return

    def kick(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._done = True
        self._wake.set()
        self._thread.join()


class Hasher:
    """sha256 on a helper thread over a small ring of buffers (hashlib releases the GIL).

    The caller takes a free buffer, fills it, writes it, and submits it; the
    helper hashes buffers in order and hands them back.
    """

    def __init__(self, buffer_size: int, buffers: int) -> None:
        self._sha = hashlib.sha256()
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._todo: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        for _ in range(buffers):
            self._free.put(bytearray(buffer_size))
        self._thread = threading.Thread(target=self._run, name="image-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._todo.get()) is not None:
            buffer, n = item
            with memoryview(buffer) as view:
                self._sha.update(view[:n])
            self._free.put(buffer)

    def take(self) -> bytearray:
        return self._free.get()

    def submit(self, buffer: bytearray, n: int) -> None:
        self._todo.put((buffer, n))

    def stop(self) -> str:
        """Wait for every submitted buffer; the hex digest of all of them, in order."""
        self._todo.put(None)
        self._thread.join()
        return self._sha.hexdigest()

"""Scrubbing a pool's image cache: re-hash every entry, quarantine what no longer matches.

Called by the agent's scrubber (``otherix.agent.scrubber``) on the pool's schedule and
for a ``storage_pool.scrub`` task. The rate and schedule are ``domain.scrub``.

- **Re-hash**: every present entry (``entries.read_entry``) is read in chunks and
  hashed, sleeping between chunks so the average stays under ``max_bytes_per_second``
  (``domain.scrub.pace``; clock and sleep are injected). Hashing runs outside the
  entry's single-flight lock, so a VM create never waits for a scrub.
- **Quarantine** of an entry whose bytes do not hash to its sidecar, under the entry's
  lock (the one ``ensure_image`` and eviction take), after checking the entry is still
  the one that was hashed (same sidecar, size, inode and mtime; else it was replaced
  meanwhile and is left alone). Its files move to
  ``{pool}/quarantine/<name>.<YYYYmmddTHHMMSSZ>/`` (``images.quarantine.move_in``:
  sidecar first, then the image, ``.source`` and ``scrub.json``). Nothing is ever
  deleted: the next use of that name downloads it again, and the operator looks at
  the quarantined files and clears them (``otherix pool cache quarantine clear``).
  Before hashing, a move a killed agent cut short is finished
  (``images.quarantine.settle``), so the damaged entry is quarantined exactly once.
- **Kept in place**: a damaged entry that a qcow2 disk under ``vms/`` uses as its
  backing file (``evict.backing_images``; our own disks are full copies, a disk
  imported by hand may not be) is not moved, since moving it would break that VM's
  disk; it is logged and listed in the result's ``kept`` for the operator.
- **What is in quarantine** (``list_quarantine``) is read back from disk on every report,
  so a quarantine cut short by a crash (a sidecar moved, the rest not) is reported too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from otherix.agent import fs
from otherix.agent.faultpoints import NO_FAULTS, FaultPoints
from otherix.agent.images import entries, evict, quarantine
from otherix.agent.images.errors import ImageError
from otherix.agent.images.locks import KeyedLocks
from otherix.agent.images.quarantine import (
    QUARANTINE_DIR,
    REPORT_NAME,
    Quarantined,
    list_quarantine,
)
from otherix.domain.scrub import pace

__all__ = [
    "CHUNK_BYTES",
    "QUARANTINE_DIR",
    "REPORT_NAME",
    "Quarantined",
    "ScrubResult",
    "list_quarantine",
    "scrub",
]

_log = logging.getLogger(__name__)

CHUNK_BYTES: Final = 1024 * 1024


@dataclass
class ScrubResult:
    entries: int = 0
    bytes: int = 0
    quarantined: list[Quarantined] = field(default_factory=list)
    #: damaged entries left in place: a VM disk uses them as its backing file
    kept: list[str] = field(default_factory=list)
    #: False when stopped before every entry was hashed
    completed: bool = True

    def to_wire(self) -> dict[str, object]:
        return {
            "entries": self.entries,
            "bytes": self.bytes,
            "quarantined": [q.to_wire() for q in self.quarantined],
            "kept": list(self.kept),
        }


class _Stopped(Exception):
    pass


def _present(images: Path) -> list[entries.Entry]:
    out: list[entries.Entry] = []
    try:
        names = sorted(os.listdir(images))
    except OSError:
        return out
    for name in names:
        try:
            entries.validate_basename(name)
        except ImageError:  # a sidecar, a .source, a temp file
            continue
        entry = entries.read_entry(images, name)
        if entry is not None:
            out.append(entry)
    return out


class _Pacer:
    """Sleeps so that the bytes read average at most ``rate`` per second."""

    def __init__(
        self,
        rate: int | None,
        clock: Callable[[], float],
        sleep: Callable[[float], object],
        stop: Callable[[], bool],
    ) -> None:
        self.rate, self._clock, self._sleep, self._stop = rate, clock, sleep, stop
        self._start = clock()
        self.done = 0

    def account(self, n: int) -> None:
        self.done += n
        if self._stop():
            raise _Stopped
        if self.rate is not None:
            wait = pace(self.done, self._clock() - self._start, self.rate)
            if wait > 0:
                self._sleep(wait)


def _hash(path: Path, pacer: _Pacer, progress: Callable[[int], None]) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb", buffering=0) as fh:
            while chunk := fh.read(CHUNK_BYTES):
                digest.update(chunk)
                pacer.account(len(chunk))
                progress(len(chunk))
    except OSError:
        return None
    return digest.hexdigest()


def _same(a: entries.Entry, b: entries.Entry | None, ino: int) -> bool:
    if b is None or (a.sha256, a.size_bytes, a.mtime) != (b.sha256, b.size_bytes, b.mtime):
        return False
    try:
        return os.lstat(b.path).st_ino == ino
    except OSError:
        return False


def scrub(
    root: Path,
    *,
    locks: KeyedLocks,
    max_bytes_per_second: int | None,
    progress: Callable[[int, int], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
    now: Callable[[], float] = time.time,
    faults: FaultPoints = NO_FAULTS,
) -> ScrubResult:
    """Re-hash every entry of the pool at ``root``, quarantine mismatches (module
    docstring). ``progress(bytes_done, bytes_total)`` after each chunk; ``stop()``
    ends it early (``completed`` False)."""
    images = root / entries.IMAGES_DIR
    quarantine.settle(root, locks=locks)
    present = _present(images)
    total = sum(e.size_bytes for e in present)
    result = ScrubResult()
    pacer = _Pacer(max_bytes_per_second, clock, sleep, stop)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(min(done, total), total)

    if progress is not None:
        progress(0, total)
    for entry in present:
        try:
            ino = os.lstat(entry.path).st_ino
        except OSError:
            continue
        before = done
        try:
            found = _hash(entry.path, pacer, advance)
        except _Stopped:
            result.completed = False
            return result
        done = before + entry.size_bytes  # a file that changed size counts as hashed
        result.entries += 1
        result.bytes += entry.size_bytes
        if found == entry.sha256:
            continue
        if entry.name in evict.backing_images(root):
            _log.error(
                "damaged cache entry kept in place: a VM disk uses it as its backing file",
                extra={"pool": str(root), "image": entry.name, "found": found},
            )
            result.kept.append(entry.name)
            continue
        with locks.hold((os.path.realpath(root), entry.name)):
            if not _same(entry, entries.read_entry(images, entry.name), ino):
                continue  # replaced or removed while it was hashed: not ours to judge
            try:
                q = quarantine.move_in(root, entry, found, now(), faults)
            except (OSError, fs.UnsafePath) as exc:
                _log.error(
                    "damaged cache entry could not be quarantined",
                    extra={"pool": str(root), "image": entry.name, "error": str(exc)},
                )
                continue
        _log.warning(
            "cache entry quarantined: its bytes do not match its sidecar",
            extra={"pool": str(root), "image": entry.name, "found": found},
        )
        result.quarantined.append(q)
    return result

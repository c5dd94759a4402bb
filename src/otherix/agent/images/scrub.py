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
  ``{pool}/quarantine/<name>.<YYYYmmddTHHMMSSZ>/``: the sidecar FIRST (the entry stops
  being present at once: a crash then leaves an absent entry plus files in quarantine,
  never a sidecar over bad bytes), then the image, then ``.source``, then a small
  ``scrub.json`` that says what was expected and found. ``quarantine/`` is made here
  when first needed. Nothing is ever deleted: the next use of that name downloads it
  again, and the operator looks at (and removes) the quarantined files.
- **Kept in place**: a damaged entry that a qcow2 disk under ``vms/`` uses as its
  backing file (``evict.backing_images``; our own disks are full copies, a disk
  imported by hand may not be) is not moved, since moving it would break that VM's
  disk; it is logged and listed in the result's ``kept`` for the operator.
- **What is in quarantine** (``list_quarantine``) is read back from disk on every report,
  so a quarantine cut short by a crash (a sidecar moved, the rest not) is reported too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from otherix.agent import fs
from otherix.agent.faultpoints import NO_FAULTS, FaultPoints
from otherix.agent.images import entries, evict
from otherix.agent.images.errors import ImageError
from otherix.agent.images.locks import KeyedLocks
from otherix.domain.scrub import pace

__all__ = [
    "CHUNK_BYTES",
    "QUARANTINE_DIR",
    "Quarantined",
    "ScrubResult",
    "list_quarantine",
    "scrub",
]

_log = logging.getLogger(__name__)

QUARANTINE_DIR: Final = "quarantine"
#: what ``quarantine/<dir>/`` says about itself, written last
REPORT_NAME: Final = "scrub.json"
CHUNK_BYTES: Final = 1024 * 1024
_STAMP: Final = "%Y%m%dT%H%M%SZ"


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Quarantined:
    """One directory of ``quarantine/``: an entry the scrub found damaged."""

    image: str
    sha256_expected: str | None
    sha256_found: str | None  # None: the move was cut short before it was recorded
    quarantined_at: str
    path: str  # relative to the pool root

    def to_wire(self) -> dict[str, object]:
        return {
            "image": self.image,
            "sha256_expected": self.sha256_expected,
            "sha256_found": self.sha256_found,
            "quarantined_at": self.quarantined_at,
            "path": self.path,
        }


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


def _target(root: Path, name: str, when: float) -> Path:
    base = root / QUARANTINE_DIR
    fs.make_dir(base)
    stamp = datetime.fromtimestamp(when, UTC).strftime(_STAMP)
    for n in range(100):
        target = fs.safe_join(base, f"{name}.{stamp}" + (f"-{n}" if n else ""))
        try:
            os.mkdir(target, 0o750)
        except FileExistsError:
            continue
        fs.fsync_dir(base)
        return target
    raise FileExistsError(f"no free quarantine directory for {name}")


#: the files of an entry, in the order a quarantine moves them (sidecar FIRST)
_MOVE_ORDER: Final = (
    (entries.SIDECAR_SUFFIX, "sidecar"),
    ("", "image"),
    (entries.SOURCE_SUFFIX, "source"),
)


def _quarantine(
    root: Path,
    entry: entries.Entry,
    found: str | None,
    when: float,
    faults: FaultPoints = NO_FAULTS,
) -> Quarantined:
    images = root / entries.IMAGES_DIR
    fs.ensure_within(root, images)
    faults("scrub.quarantine", image=entry.name, step="start")
    target = _target(root, entry.name, when)
    for suffix, step in _MOVE_ORDER:
        fs.move_file(
            fs.safe_join(images, entry.name + suffix), fs.safe_join(target, entry.name + suffix)
        )
        faults("scrub.quarantine", image=entry.name, step=step)
    done = Quarantined(
        entry.name, entry.sha256, found, _rfc3339(when), f"{QUARANTINE_DIR}/{target.name}"
    )
    fs.atomic_write(target / REPORT_NAME, json.dumps(done.to_wire()).encode(), 0o644)
    faults("scrub.quarantine", image=entry.name, step="report")
    return done


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
                q = _quarantine(root, entry, found, now(), faults)
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


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as fh:
            raw: Any = json.loads(fh.read(64 * 1024))
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def _from_dir(root: Path, directory: Path) -> Quarantined:
    stem, _, stamp = directory.name.rpartition(".")
    name = stem or directory.name
    try:
        when = datetime.strptime(stamp.split("-")[0], _STAMP).replace(tzinfo=UTC).timestamp()
    except ValueError:
        when = directory.stat().st_mtime
    rel = f"{QUARANTINE_DIR}/{directory.name}"
    report = _read_report(directory / REPORT_NAME)
    if report is not None and isinstance(report.get("image"), str):
        found = report.get("sha256_found")
        expected = report.get("sha256_expected")
        at = report.get("quarantined_at")
        return Quarantined(
            str(report["image"]),
            expected if isinstance(expected, str) else None,
            found if isinstance(found, str) else None,
            at if isinstance(at, str) else _rfc3339(when),
            rel,
        )
    expected = entries.read_sidecar(directory / (name + entries.SIDECAR_SUFFIX))
    return Quarantined(name, expected, None, _rfc3339(when), rel)


def list_quarantine(root: Path) -> list[Quarantined]:
    """What ``{root}/quarantine/`` holds, one item per directory, oldest first."""
    base = root / QUARANTINE_DIR
    try:
        dirs = sorted(d for d in base.iterdir() if d.is_dir() and not d.is_symlink())
    except OSError:
        return []
    out: list[Quarantined] = []
    for directory in dirs:
        try:
            out.append(_from_dir(root, directory))
        except OSError:
            continue
    return sorted(out, key=lambda q: (q.quarantined_at, q.path))

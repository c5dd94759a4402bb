"""Evicting image cache entries: last use, what VM disks depend on, the removal itself.

Called by the pool report pass (``otherix.agent.report.PoolState``) for every ready pool
with the pool's ``config.cache`` policy (``otherix.domain.cache``), and by a
``storage_pool.cache_prune`` task. The choice is ``domain.cache.choose_evictions``; this
module supplies its inputs and removes what it chose.

- **Last use** of an entry is its sidecar's mtime: ``touch`` sets it whenever the cache
  hands the entry out (a hit, a verify, a download), so no data is written per use.
  An entry that was never touched reads as used when it was imported.
- **What depends on an entry**: the images of the VMs that run (their disks' image
  sha256, which the control plane declares with each disk), and any qcow2 disk under
  ``vms/`` whose backing file is in ``images/`` (our disks are full copies; a disk
  imported by hand may not be).
- **Removal**, under the entry's single-flight lock (the one ``ensure_image`` takes, so a
  use and an eviction never overlap): the entry is read again and kept if it changed or
  was used meanwhile; then the sidecar goes first (the entry stops being present at
  once, so a crash leaves an absent entry, which the next use fetches again, never a
  sidecar over missing bytes), then ``.source``, then the image file. Each eviction is
  journalled in ``{pool}/.otherix-evictions.json`` before its first file goes
  (``images.evictlog``), so one cut short by ``kill -9`` is finished (or, never begun,
  dropped) by the next pass after the restart (``settle``) and every eviction done is
  reported, even when the agent died before its next heartbeat (``history``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from otherix.agent import fs
from otherix.agent.faultpoints import NO_FAULTS, FaultPoints
from otherix.agent.images import entries, evictlog
from otherix.agent.images.errors import ImageError
from otherix.agent.images.locks import KeyedLocks
from otherix.domain.cache import CacheEntry, CachePolicy, EvictReason, choose_evictions

__all__ = ["Eviction", "backing_images", "evict", "history", "last_used", "settle", "touch"]

_log = logging.getLogger(__name__)

_QCOW2_MAGIC = b"QFI\xfb"
#: the files of an entry, in the order an eviction removes them (module docstring)
_REMOVAL_ORDER = (
    (entries.SIDECAR_SUFFIX, "sidecar"),
    (entries.SOURCE_SUFFIX, "source"),
    ("", "image"),
)


@dataclass(frozen=True)
class Eviction:
    image: str
    sha256: str
    size_bytes: int
    reason: EvictReason
    last_used_at: str
    evicted_at: str

    def to_wire(self) -> dict[str, object]:
        return {
            "image": self.image,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "reason": self.reason,
            "last_used_at": self.last_used_at,
            "evicted_at": self.evicted_at,
        }


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def touch(images: Path, name: str) -> None:
    """Record a use of entry ``name`` now (best effort: a read-only pool still serves)."""
    with contextlib.suppress(OSError):
        os.utime(images / (name + entries.SIDECAR_SUFFIX))


def last_used(images: Path, name: str, fallback: float) -> float:
    try:
        return os.stat(images / (name + entries.SIDECAR_SUFFIX)).st_mtime
    except OSError:
        return fallback


def _backing_name(disk: Path) -> str | None:
    """The backing file a qcow2 disk names (header fields 8-20), or None."""
    try:
        with open(disk, "rb") as fh:
            head = fh.read(20)
            if len(head) < 20 or head[:4] != _QCOW2_MAGIC:
                return None
            offset, size = struct.unpack(">QI", head[8:20])
            if offset == 0 or size == 0 or size > 4096:
                return None
            fh.seek(offset)
            return fh.read(size).decode("utf-8", "replace")
    except OSError:
        return None


def backing_images(root: Path) -> set[str]:
    """Basenames of cache entries that some disk under ``vms/`` uses as its backing file."""
    images = os.path.realpath(root / entries.IMAGES_DIR)
    found: set[str] = set()
    vms = root / "vms"
    try:
        vm_dirs = list(vms.iterdir())
    except OSError:
        return found
    for vm_dir in vm_dirs:
        backing = _backing_name(vm_dir / "disk.qcow2")
        if backing is None:
            continue
        target = os.path.realpath(os.path.join(vm_dir, backing))
        if os.path.dirname(target) == images:
            found.add(os.path.basename(target))
    return found


def _entries(images: Path) -> list[CacheEntry]:
    out: list[CacheEntry] = []
    try:
        names = sorted(os.listdir(images))
    except OSError:
        return out
    for name in names:
        try:
            entries.validate_basename(name)
        except ImageError:  # a sidecar, a .source, a temp file: not an entry name
            continue
        entry = entries.read_entry(images, name)
        if entry is not None:
            used = last_used(images, name, entry.mtime)
            out.append(CacheEntry(name, entry.sha256, entry.size_bytes, used))
    return out


def evict(
    root: Path,
    policy: CachePolicy,
    *,
    in_use: Iterable[str],
    capacity: int,
    available: int,
    locks: KeyedLocks,
    now: float | None = None,
    prune: bool = False,
    dry_run: bool = False,
    faults: FaultPoints = NO_FAULTS,
) -> list[Eviction]:
    """Evict what ``policy`` says from the pool at ``root`` (module docstring); what went
    (with ``dry_run``, what would go). ``in_use``: sha256s and names VM disks depend on,
    to which the backing files found under ``vms/`` are added here."""
    images = root / entries.IMAGES_DIR
    when = time.time() if now is None else now
    used = set(in_use) | backing_images(root)
    settled = [] if dry_run else settle(root, locks=locks, faults=faults)
    chosen = choose_evictions(
        _entries(images),
        capacity=capacity,
        available=available,
        policy=policy,
        in_use=used,
        now=when,
        prune=prune,
    )
    journal, journal_key = evictlog.Journal(root), _journal_key(root)
    done: list[Eviction] = []
    for candidate, reason in chosen:
        eviction = Eviction(
            candidate.name,
            candidate.sha256,
            candidate.size_bytes,
            reason,
            _stamp(candidate.last_used),
            _stamp(when),
        )
        if dry_run:
            done.append(eviction)
            continue
        with locks.hold((os.path.realpath(root), candidate.name)):
            entry = entries.read_entry(images, candidate.name)
            if (
                entry is None
                or entry.sha256 != candidate.sha256
                or last_used(images, candidate.name, entry.mtime) != candidate.last_used
            ):
                continue  # replaced or used since it was chosen: keep it
            record = eviction.to_wire()
            try:
                with locks.hold(journal_key):
                    journal.begin(record)
                journalled = True
            except OSError as exc:
                # A full pool cannot take even the journal's few bytes, and that is when
                # space matters most: evict anyway, as before the journal (a kill in the
                # next moments would leave this one unreported).
                _log.warning(
                    "eviction journal cannot be written; evicting without it",
                    extra={"pool": str(root), "image": candidate.name, "error": str(exc)},
                )
                journalled = False
            faults("evict.step", image=candidate.name, step="start")
            try:
                _remove(images, candidate.name, faults)
            except (OSError, fs.UnsafePath) as exc:  # still pending: the next pass finishes it
                _log.warning(
                    "cache entry could not be evicted",
                    extra={"pool": str(root), "image": candidate.name, "error": str(exc)},
                )
                continue
            if journalled:
                _finish(journal, journal_key, locks, record)
        _log.info(
            "cache entry evicted",
            extra={"pool": str(root), "image": candidate.name, "reason": reason},
        )
        done.append(eviction)
    return settled + done


def _journal_key(root: Path) -> tuple[str, str]:
    return (os.path.realpath(root), ".evictions")  # no entry is called that (a dot name)


def _remove(images: Path, name: str, faults: FaultPoints) -> None:
    for suffix, step in _REMOVAL_ORDER:
        fs.remove_file(fs.safe_join(images, name + suffix))
        faults("evict.step", image=name, step=step)


def _finish(
    journal: evictlog.Journal,
    key: tuple[str, str],
    locks: KeyedLocks,
    record: dict[str, Any],
    *,
    evicted: bool = True,
) -> None:
    try:
        with locks.hold(key):
            journal.finish(record, evicted=evicted)
    except OSError as exc:  # it stays pending: the next pass settles it again
        _log.warning("eviction journal not updated", extra={"path": str(journal.path),
                                                           "error": str(exc)})  # fmt: skip


def _from_wire(record: dict[str, Any]) -> Eviction:
    return Eviction(
        str(record["image"]),
        str(record["sha256"]),
        int(record["size_bytes"]),
        record["reason"],
        str(record["last_used_at"]),
        str(record["evicted_at"]),
    )


def settle(root: Path, *, locks: KeyedLocks, faults: FaultPoints = NO_FAULTS) -> list[Eviction]:
    """Finish or drop the evictions a killed agent left pending in the pool's journal
    (``images.evictlog``); the ones finished."""
    images = root / entries.IMAGES_DIR
    journal, key = evictlog.Journal(root), _journal_key(root)
    with locks.hold(key):
        pending, _ = journal.read()
    out: list[Eviction] = []
    for record in pending:
        name = str(record["image"])
        try:
            entries.validate_basename(name)
        except ImageError:
            _finish(journal, key, locks, record, evicted=False)
            continue
        with locks.hold((os.path.realpath(root), name)):
            entry = entries.read_entry(images, name)
            if entry is not None and entry.sha256 == record["sha256"]:
                _finish(journal, key, locks, record, evicted=False)  # never begun
                continue
            if entry is None:  # begun: what is left of its files goes
                try:
                    _remove(images, name, faults)
                except (OSError, fs.UnsafePath) as exc:
                    _log.warning(
                        "cache entry could not be evicted",
                        extra={"pool": str(root), "image": name, "error": str(exc)},
                    )
                    continue
            _finish(journal, key, locks, record)
        _log.info(
            "cache eviction cut short by a restart finished",
            extra={"pool": str(root), "image": name, "reason": record["reason"]},
        )
        out.append(_from_wire(record))
    return out


def history(root: Path) -> list[Eviction]:
    """The pool's recent evictions as the journal keeps them (oldest first)."""
    _, done = evictlog.Journal(root).read()
    out: list[Eviction] = []
    for record in done:
        try:
            out.append(_from_wire(record))
        except (TypeError, ValueError):
            continue
    return out

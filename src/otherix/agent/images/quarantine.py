"""A pool's ``quarantine/``: damaged cache entries moved aside, listed, settled, cleared.

Called by the scrub (``images.scrub``: ``move_in`` for an entry whose bytes no longer
match its sidecar, ``settle`` before each scrub), by the scrubber's report
(``list_quarantine``) and by a ``storage_pool.quarantine_clear`` task (``clear``, through
``ImageCache.clear_quarantine``). All writes go through ``otherix.agent.fs``.

- **Layout**: one directory per quarantined entry, ``{pool}/quarantine/<name>.<YYYYmmdd
  THHMMSSZ>[-n]/``, holding the entry's sidecar, image and ``.source`` (as they were
  in ``images/``) and, written last, ``scrub.json`` (what was expected and found).
- **Move in** (under the entry's lock, taken by the caller): the sidecar FIRST (the
  entry stops being present at once: a crash then leaves an absent entry, never a
  sidecar over bad bytes), then the image, then ``.source``, then ``scrub.json``.
- **Settle**: a move cut short by ``kill -9`` left a directory without ``scrub.json``
  and, in ``images/``, the rest of the entry without its sidecar (an absent entry
  nothing would use or remove, damaged bytes outside quarantine). Before each scrub,
  and once per pool when the scrubber first sees it, such a directory is finished
  under the entry's lock: what is left of the entry moves in (the image only while
  its ``.source`` is still beside it naming the quarantined sha256, or there is none:
  the move order puts the image before ``.source``, so anything else is a newer
  entry's), then ``scrub.json`` (``sha256_found`` null: not recorded). A directory
  left empty (the kill came between its mkdir and the sidecar) is removed. When
  ``images/`` holds the name's sidecar again (a newer entry), only ``scrub.json`` is
  written.
- **List** (``list_quarantine``): read back from disk on every report, one item per
  directory, so the report always says what is on disk.
- **Clear**: the operator removes directories after looking at them (all of them, or
  those of some image names); nothing else ever deletes from ``quarantine/``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from otherix.agent import fs
from otherix.agent.faultpoints import NO_FAULTS, FaultPoints
from otherix.agent.images import entries
from otherix.agent.images.errors import ImageError
from otherix.agent.images.locks import KeyedLocks

__all__ = [
    "QUARANTINE_DIR",
    "REPORT_NAME",
    "Quarantined",
    "clear",
    "list_quarantine",
    "move_in",
    "rfc3339",
    "settle",
]

_log = logging.getLogger(__name__)

QUARANTINE_DIR: Final = "quarantine"
#: what ``quarantine/<dir>/`` says about itself, written last
REPORT_NAME: Final = "scrub.json"
_STAMP: Final = "%Y%m%dT%H%M%SZ"
#: the files of an entry, in the order they move in (sidecar FIRST)
_MOVE_ORDER: Final = (
    (entries.SIDECAR_SUFFIX, "sidecar"),
    ("", "image"),
    (entries.SOURCE_SUFFIX, "source"),
)


def rfc3339(ts: float) -> str:
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


def _write_report(directory: Path, done: Quarantined) -> None:
    fs.atomic_write(directory / REPORT_NAME, json.dumps(done.to_wire()).encode(), 0o644)


def move_in(
    root: Path,
    entry: entries.Entry,
    found: str | None,
    when: float,
    faults: FaultPoints = NO_FAULTS,
) -> Quarantined:
    """Move ``entry`` into ``quarantine/`` (module docstring); the caller holds its lock."""
    images = root / entries.IMAGES_DIR
    fs.ensure_within(root, images)
    faults("scrub.quarantine", image=entry.name, step="start")
    target = _target(root, entry.name, when)
    faults("scrub.quarantine", image=entry.name, step="dir")
    for suffix, step in _MOVE_ORDER:
        fs.move_file(
            fs.safe_join(images, entry.name + suffix), fs.safe_join(target, entry.name + suffix)
        )
        faults("scrub.quarantine", image=entry.name, step=step)
    done = Quarantined(
        entry.name, entry.sha256, found, rfc3339(when), f"{QUARANTINE_DIR}/{target.name}"
    )
    _write_report(target, done)
    faults("scrub.quarantine", image=entry.name, step="report")
    return done


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as fh:
            raw: Any = json.loads(fh.read(64 * 1024))
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def _name_and_time(directory: Path) -> tuple[str, float]:
    stem, _, stamp = directory.name.rpartition(".")
    try:
        when = datetime.strptime(stamp.split("-")[0], _STAMP).replace(tzinfo=UTC).timestamp()
    except ValueError:
        when = directory.stat().st_mtime
    return stem or directory.name, when


def _from_dir(directory: Path) -> Quarantined:
    name, when = _name_and_time(directory)
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
            at if isinstance(at, str) else rfc3339(when),
            rel,
        )
    expected = entries.read_sidecar(directory / (name + entries.SIDECAR_SUFFIX))
    return Quarantined(name, expected, None, rfc3339(when), rel)


def _dirs(root: Path) -> list[Path]:
    base = root / QUARANTINE_DIR
    try:
        return sorted(d for d in base.iterdir() if d.is_dir() and not d.is_symlink())
    except OSError:
        return []


def list_quarantine(root: Path) -> list[Quarantined]:
    """What ``{root}/quarantine/`` holds, one item per directory, oldest first."""
    out: list[Quarantined] = []
    for directory in _dirs(root):
        try:
            out.append(_from_dir(directory))
        except OSError:
            continue
    return sorted(out, key=lambda q: (q.quarantined_at, q.path))


def _source_names(path: Path, sha256: str | None) -> bool:
    raw = entries.read_small(path)
    source = entries.Source.parse(raw) if raw is not None else None
    return source is not None and source.sha256 == sha256


def _finish(root: Path, directory: Path, name: str, when: float) -> Quarantined | None:
    """Finish one cut-short move (module docstring: settle); the caller holds the lock."""
    images = root / entries.IMAGES_DIR
    held = os.listdir(directory)
    if not held:
        os.rmdir(directory)
        fs.fsync_dir(directory.parent)
        return None
    expected = entries.read_sidecar(directory / (name + entries.SIDECAR_SUFFIX))
    here = {s: os.path.lexists(images / (name + s)) for s in ("", entries.SOURCE_SUFFIX)}
    newer = os.path.lexists(images / (name + entries.SIDECAR_SUFFIX))
    source_ours = here[entries.SOURCE_SUFFIX] and _source_names(
        images / (name + entries.SOURCE_SUFFIX), expected
    )
    source_moved = (name + entries.SOURCE_SUFFIX) in held
    image_ours = source_ours or not here[entries.SOURCE_SUFFIX]
    if not newer and here[""] and name not in held and not source_moved and image_ours:
        fs.move_file(fs.safe_join(images, name), fs.safe_join(directory, name))
    if not newer and source_ours and not source_moved:
        suffix = entries.SOURCE_SUFFIX
        fs.move_file(fs.safe_join(images, name + suffix), fs.safe_join(directory, name + suffix))
    done = Quarantined(name, expected, None, rfc3339(when), f"{QUARANTINE_DIR}/{directory.name}")
    _write_report(directory, done)
    return done


def settle(root: Path, *, locks: KeyedLocks) -> list[Quarantined]:
    """Finish every move into ``quarantine/`` a killed agent cut short (module
    docstring); the ones finished."""
    out: list[Quarantined] = []
    for directory in _dirs(root):
        if os.path.lexists(directory / REPORT_NAME):
            continue
        name, when = _name_and_time(directory)
        try:
            entries.validate_basename(name)
        except ImageError:
            continue  # not a directory we made
        with locks.hold((os.path.realpath(root), name)):
            try:
                done = _finish(root, directory, name, when)
            except (OSError, fs.UnsafePath) as exc:
                _log.error(
                    "cut-short quarantine could not be finished",
                    extra={"pool": str(root), "path": str(directory), "error": str(exc)},
                )
                continue
        if done is not None:
            _log.warning(
                "quarantine cut short by a restart finished",
                extra={"pool": str(root), "image": name, "path": done.path},
            )
            out.append(done)
    return out


def clear(
    root: Path,
    images: Collection[str] | None,
    *,
    protected: fs.ProtectedRoots,
    locks: KeyedLocks,
) -> list[Quarantined]:
    """Remove the quarantined entries of ``images`` (all of them when None), each under
    its entry's lock (never in the middle of a move in); those removed."""
    base = root / QUARANTINE_DIR
    removed: list[Quarantined] = []
    for item in list_quarantine(root):
        if images is not None and item.image not in images:
            continue
        target = fs.safe_join(base, item.path.split("/", 1)[1])
        with locks.hold((os.path.realpath(root), item.image)):
            if fs.remove_tree(base, target, protected=protected):
                removed.append(item)
    if removed:
        fs.fsync_dir(base)
    return removed

"""Drift in a ready pool (issue 16): what is on disk that nobody owns, purge, adoption.

Called by the pool report (``otherix.agent.report.PoolState``): ``scan`` on each report
pass (at most every ``storage.usage_interval``, and at once after a VM task, a purge or
an import), ``purge`` for a ``storage_pool.drift_purge`` task, ``adopt`` for a
``vm.import`` task. The rules are ``otherix.domain.drift``; this module lists and moves.

- **Listing**: ``vms/`` (its entries and, one level down, what each VM directory
  holds), ``images/`` and ``scratch/`` (their entries), each directory opened
  ``O_NOFOLLOW`` relative to its parent's descriptor and every entry ``lstat``-ed: no
  symlink is ever followed, so a symlink pointing out of the pool is reported as the
  link it is (and a purge unlinks the link, never its target). A subdirectory whose
  real path leaves the pool is not listed (the reconciler fails such a pool). A name
  that is not UTF-8 cannot be reported; it is counted in ``more``.
- **Purge** (``purge``): the paths the operator saw are judged again on a fresh scan
  under the declared state of now (``domain.drift.purge_plan``): what became owned,
  went away or is no longer stray is kept and said so. Each item is first renamed into
  ``scratch/purge-<uuid>.tmp`` (one atomic rename inside the pool) and only then
  removed; a kill between the two leaves it in ``scratch/``, which the sweep at agent
  start removes. (An area mounted from another filesystem than ``scratch/`` cannot be
  renamed across: its item is removed in place.) Declared state and the purge run on
  the agent's one loop thread, so nothing can become owned between the check and the
  rename.
- **Adoption** (``adopt``): the orphan disk (an orphan file of ``vms/`` or a stray
  file of ``scratch/``, checked again on a fresh scan) becomes
  ``vms/<new-vm-id>/disk.<fmt>`` by one rename (never a copy, never over a file); its
  format is sniffed and checked with ``qemu-img info``; a qcow2 whose backing file is
  not an entry of the pool's ``images/`` is refused. A re-run after a crash finds the
  disk already adopted and reports it again; the orphan is never removed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from otherix.agent import fs
from otherix.agent.images import entries, formats
from otherix.agent.images.errors import ImageError
from otherix.domain import drift
from otherix.domain.drift import EntryType, Item, Owned, Seen

__all__ = ["AdoptError", "Scan", "adopt", "purge", "scan"]

_log = logging.getLogger(__name__)

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_DISK_MODE: Final = 0o600
_DIR_MODE: Final = 0o750


@dataclass(frozen=True)
class Scan:
    """What a scan found: the items (bounded) and how many more were not listed."""

    items: list[Item]
    more: int
    #: every item found (unbounded), for a purge or an adoption to judge against
    found: list[Item]

    def to_wire(self) -> dict[str, Any]:
        return {
            "items": [
                {
                    "kind": i.kind,
                    "area": i.area,
                    "path": i.path,
                    "type": i.type,
                    "size_bytes": i.size_bytes,
                    "modified_at": entries.rfc3339(i.mtime),
                }
                for i in self.items
            ],
            "more": self.more,
        }


def _type(mode: int) -> EntryType:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


class _Lister:
    def __init__(self, busy: Callable[[str], bool], protected: fs.ProtectedRoots | None) -> None:
        self.busy = busy
        self.protected = protected
        self.unnamed = 0

    def entries(self, fd: int, prefix: str, real: str) -> list[tuple[Seen, str]]:
        """(entry, name) of the directory open at ``fd``; ``real``: its real path."""
        out: list[tuple[Seen, str]] = []
        try:
            with os.scandir(fd) as it:
                listed = list(it)
        except OSError:
            return out
        for entry in listed:
            try:
                entry.name.encode("utf-8")
                st = entry.stat(follow_symlinks=False)
            except UnicodeError:
                self.unnamed += 1
                continue
            except OSError:
                continue
            kind = _type(st.st_mode)
            size = st.st_size if kind == "file" else 0
            here = os.path.join(real, entry.name)
            if self.protected is not None and self.protected.held_by(here, real) is not None:
                continue  # another pool's root (overlapping rows from before the rule): not ours
            busy = self.busy(here)
            out.append((Seen(f"{prefix}/{entry.name}", kind, size, st.st_mtime, busy), entry.name))
        return out

    def area(self, root: Path, name: str, *, depth: int) -> list[Seen]:
        """The entries of ``root/name`` (and, with ``depth`` 2, of its directories);
        directory sizes are the sum of their files'."""
        top = root / name
        try:
            real = str(fs.ensure_within(root, top))
            fd = os.open(top, _DIR_FLAGS)
        except (OSError, fs.UnsafePath):
            return []
        try:
            out: list[Seen] = []
            for seen, entry_name in self.entries(fd, name, real):
                if seen.type != "dir":
                    out.append(seen)
                    continue
                kids = self._children(fd, entry_name, seen.path, os.path.join(real, entry_name))
                size = sum(k.size_bytes for k in kids)
                out.append(Seen(seen.path, "dir", size, seen.mtime, seen.busy))
                if depth > 1:
                    out.extend(kids)
            return out
        finally:
            os.close(fd)

    def _children(self, parent: int, name: str, prefix: str, real: str) -> list[Seen]:
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError:
            return []
        try:
            return [s for s, _ in self.entries(fd, prefix, real)]
        finally:
            os.close(fd)


def _present(root: Path, seen: list[Seen]) -> list[str]:
    images = root / entries.IMAGES_DIR
    names = [s.path.split("/", 1)[1] for s in seen if s.type == "file"]
    return [n for n in names if entries.read_entry(images, n) is not None]


def scan(
    root: Path,
    owned: Owned,
    *,
    busy: Callable[[str], bool],
    protected: fs.ProtectedRoots | None = None,
    now: float | None = None,
) -> Scan:
    """The drift of the pool at ``root`` (host path) under the declared state ``owned``.
    ``busy(realpath)``: a scratch file some task of this process is writing;
    ``protected``: the node's pool roots, never listed (another pool is not drift)."""
    when = time.time() if now is None else now
    lister = _Lister(busy, protected)
    vms = lister.area(root, "vms", depth=2)
    images = lister.area(root, entries.IMAGES_DIR, depth=1)
    scratch = lister.area(root, "scratch", depth=1)
    found = [
        *drift.vm_items(vms, owned),
        *drift.image_items(images, _present(root, images), now=when),
        *drift.scratch_items(scratch, now=when),
    ]
    items, more = drift.bounded(found)
    return Scan(items, more + lister.unnamed, sorted(found, key=lambda i: i.path))


# --- purge ------------------------------------------------------------------------------


def _within(root: Path, rel: str) -> Path:
    """``root/rel`` with every segment checked and the parent inside the pool."""
    path = fs.safe_join(root, *rel.split("/"))
    fs.ensure_within(root, path.parent)
    return path


def _trash(root: Path, item: Item, protected: fs.ProtectedRoots) -> None:
    """Rename ``item`` into ``scratch/`` (atomic), then remove it there."""
    scratch = root / "scratch"
    victim = _within(root, item.path)
    boundary = os.path.realpath(root / item.area)  # the area, as remove_tree bounds it
    held = protected.held_by(os.path.join(os.path.realpath(victim.parent), victim.name), boundary)
    if held is not None:
        raise fs.UnsafePath(f"{item.path} overlaps the root of another pool ({held})")
    target = scratch / f"purge-{uuid.uuid4().hex}.tmp"
    if item.area == "scratch" and victim.parent == scratch:
        target = victim  # already in scratch/: remove it where it is
    else:
        try:
            if not fs.move_file(victim, target):
                return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # the area is another filesystem than scratch/: remove it where it is (it was
            # checked on this thread just now, and nothing can own it meanwhile)
            fs.remove_tree(root / item.area, victim, protected=protected)
            return
    fs.remove_tree(scratch, target, protected=protected)
    parent = victim.parent
    if item.area == "vms" and parent != root / "vms":  # a VM directory left empty
        with contextlib.suppress(OSError):
            os.rmdir(parent)


def purge(
    root: Path,
    paths: list[str],
    owned: Owned,
    *,
    busy: Callable[[str], bool],
    protected: fs.ProtectedRoots,
) -> dict[str, Any]:
    """Remove the ``paths`` that are still drift now; the task's result
    ``{removed: [{path, size_bytes}], kept: [{path, reason}], bytes}``."""
    found = scan(root, owned, busy=busy, protected=protected).found
    go, kept = drift.purge_plan(paths, found, owned)
    removed: list[dict[str, Any]] = []
    for item in go:
        try:
            _trash(root, item, protected)
        except (OSError, fs.UnsafePath) as exc:
            _log.warning("drift item not removed", extra={"path": item.path, "error": str(exc)})
            kept[item.path] = "failed"
            continue
        _log.info("drift item removed", extra={"pool": str(root), "path": item.path})
        removed.append({"path": item.path, "size_bytes": item.size_bytes})
    return {
        "removed": removed,
        "kept": [{"path": p, "reason": r} for p, r in kept.items()],
        "bytes": sum(r["size_bytes"] for r in removed),
    }


# --- adoption ---------------------------------------------------------------------------


class AdoptError(Exception):
    """A ``vm.import`` refused: ``code`` goes into the task's error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _backing(path: Path) -> str | None:
    """The backing file a qcow2 names (header fields 8-20), or None."""
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as fh:
        head = fh.read(20)
        if len(head) < 20 or head[:4] != formats.QCOW2_MAGIC:
            return None
        offset, size = struct.unpack(">QI", head[8:20])
        if offset == 0 or size == 0:
            return None
        if size > 4096:
            return "\x00"  # nothing we would accept
        fh.seek(offset)
        return fh.read(size).decode("utf-8", "replace")


def _check_disk(root: Path, source: Path, dest_dir: Path) -> tuple[str, int, int]:
    """(format, virtual size, allocated bytes) of the disk at ``source``, or AdoptError."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            head = fh.read(formats.HEAD_BYTES)
        fmt = formats.sniff(head)
        backing = _backing(source) if fmt == "qcow2" else None
        size = os.stat(source).st_size
        allocated = os.stat(source).st_blocks * 512
    except OSError as exc:
        raise AdoptError("disk_unreadable", f"cannot read {source}: {fs.strerror(exc)}") from exc
    if backing is not None:
        images = os.path.realpath(root / entries.IMAGES_DIR)
        target = os.path.realpath(os.path.join(dest_dir, backing))
        name = os.path.basename(target)
        inside = os.path.dirname(target) == images
        if not inside or entries.read_entry(Path(images), name) is None:
            raise AdoptError(
                "disk_backing_outside_pool",
                f"the disk's backing file {backing!r} is not an image in the pool's cache "
                f"({images}); only a self-contained disk or one backed by the cache is adopted",
            )
        virtual = formats.header_virtual_size(head, size)
        return fmt, virtual or size, allocated
    try:
        if fmt == "qcow2":
            formats.check_header(head)
        info = formats.info(source, fmt)
    except ImageError as exc:
        raise AdoptError("unsupported_format", exc.message) from exc
    return fmt, info.virtual_size_bytes, allocated


def _existing(vm_dir: Path) -> Path | None:
    for name in drift.DISK_NAMES:
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.lstat(vm_dir / name).st_mode):
                return vm_dir / name
    return None


def adopt(
    root: Path,
    vm_id: str,
    source_rel: str,
    owned: Owned,
    *,
    busy: Callable[[str], bool],
    protected: fs.ProtectedRoots | None = None,
) -> dict[str, Any]:
    """Move the orphan ``source_rel`` to ``vms/<vm_id>/disk.<fmt>``; the task's result
    ``{vm_id, format, virtual_size_bytes, disk_size_bytes, path}`` (``path`` relative to
    the pool root). Raises AdoptError."""
    vm_dir = fs.safe_join(root, "vms", vm_id)
    done = _existing(vm_dir)
    if done is not None:  # a re-run: adopted before a crash or a lost report
        fmt = done.name.split(".", 1)[1]
        st = os.stat(done)
        with open(done, "rb") as fh:
            virtual = formats.header_virtual_size(fh.read(formats.HEAD_BYTES), st.st_size)
        return {
            "vm_id": vm_id,
            "format": fmt,
            "virtual_size_bytes": virtual or st.st_size,
            "disk_size_bytes": st.st_blocks * 512,
            "path": f"vms/{vm_id}/{done.name}",
        }
    current = {i.path: i for i in scan(root, owned, busy=busy, protected=protected).found}
    item = current.get(source_rel)
    if item is None or item.type != "file" or item.area not in ("vms", "scratch"):
        raise AdoptError(
            "disk_not_orphan",
            f"{source_rel} is not an orphan disk file of this pool now (vms/ or scratch/)",
        )
    try:
        source = _within(root, source_rel)
    except (fs.UnsafePath, OSError) as exc:
        raise AdoptError("disk_not_orphan", str(exc)) from exc
    fmt, virtual, allocated = _check_disk(root, source, vm_dir)
    final = vm_dir / f"disk.{fmt}"
    try:
        fs.make_dir(vm_dir, _DIR_MODE)
        os.chmod(source, _DISK_MODE, follow_symlinks=False)
        if not fs.move_file(source, final):
            raise AdoptError("disk_not_orphan", f"{source_rel} went away")
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise AdoptError("disk_exists", f"{final} exists") from exc
        raise AdoptError("import_failed", f"moving {source_rel}: {fs.strerror(exc)}") from exc
    parent = source.parent
    if item.area == "vms" and parent != root / "vms":
        with contextlib.suppress(OSError):
            os.rmdir(parent)  # the orphan's directory, now empty
    _log.info("disk adopted", extra={"pool": str(root), "from": source_rel, "vm": vm_id})
    return {
        "vm_id": vm_id,
        "format": fmt,
        "virtual_size_bytes": virtual,
        "disk_size_bytes": allocated,
        "path": f"vms/{vm_id}/{final.name}",
    }

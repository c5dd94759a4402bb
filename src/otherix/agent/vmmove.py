"""The work of a ``vm.move`` or ``vm.disk_remove`` task (``otherix vm move``, issue 16).

Called by the VM task workers (``otherix.agent.vmtasks``, their move lane: one
thread, so a move and the removal that follows an earlier one never overlap)
in a worker thread. Every failure leaves as a ``vmwork.TaskFailure``.

``vm.move`` args: ``{vm_id, format, source: {pool_name, pool_path}, target:
{pool_name, pool_path}}``. Both pools must be registered and ready on this
node. The disk is ``{source}/vms/{vm}/disk.{format}`` (derived from the
registry and the VM id, never from a path in the args); it is copied to
``{target}/scratch/move-{vm}.{uuid}.tmp`` (a reflink where the filesystem
shares extents, else a sparse-aware copy, after a room check), the sha256 of
source and copy are compared, and the copy is published as
``{target}/vms/{vm}/disk.{format}`` (rename, fsynced). Nothing here removes
the source: the control plane switches the disk to the target in one
transaction when the task succeeds and only then asks for the source's
removal (``vm.disk_remove``). So at every instant the store names one copy
that is complete.

A re-run (the agent was killed; the task is still in the desired state)
finds a published target copy: if its sha256 equals the source's it is the
result, else it is a stale leftover (the target is not the VM's disk until
the switch) and is replaced by a fresh verified copy. A killed copy leaves a
scratch temp, swept at the next start. The VM's QEMU must not run
(``vm_running``), and its restart policy is held for the move.

Progress: ``{bytes_done, bytes_total, phase}`` with ``phase`` ``source``
(hashing the source, 0-30), ``copy`` (30-65) then ``verify`` (hashing the
copy, 65-99). ``max_bytes_per_second`` (the
agent's ``tasks.move_max_bytes_per_second``; None: unlimited) paces every
byte read, copy and verify alike, so the VMs on the pools keep their disk
bandwidth.

Result: ``{vm_id, file_path, method ("reflink"|"copy"|"existing"), sha256,
bytes, virtual_size_bytes, disk_size_bytes}``, ``file_path`` as the node
names it.

``vm.disk_remove`` args: ``{vm_id, pool_name, pool_path, format, keep:
{pool_name, pool_path} | null}``: removes ``{pool}/vms/{vm}/`` (the copy a
move left behind: the source after a success, the target after a failure),
but only while the pool's declared disks hold no disk of that VM (it became
owned again: ``disk_owned``, nothing removed) and, with ``keep``, only while
``{keep}/vms/{vm}/disk.{format}`` is a regular file (the VM's one copy must
exist first: ``keep_missing``, nothing removed). Idempotent. Result:
``{vm_id, removed}``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from otherix.agent import fs, fs_clone
from otherix.agent.images import ImageCache, formats
from otherix.agent.images.disks import DISK_MODE, VMS_DIR
from otherix.agent.vmwork import PoolResolver, TaskFailure, _node_path, _root, _str, _vm_id
from otherix.domain.scrub import pace

__all__ = [
    "PHASES",
    "VM_DISK_REMOVE",
    "VM_MOVE",
    "MoveArgs",
    "PoolOwnership",
    "RemoveArgs",
    "move",
    "remove_copy",
]

VM_MOVE: Final = "vm.move"
VM_DISK_REMOVE: Final = "vm.disk_remove"
_STEP: Final = 4 * 1024 * 1024
_READ: Final = 1024 * 1024
#: progress (percent) of each phase
PHASES: Final = {"source": (0, 30), "copy": (30, 65), "verify": (65, 99)}
_DIR_MODE: Final = 0o750

#: ``(phase, bytes_done, bytes_total)``; may raise to cancel
MoveProgress = Callable[[str, int, int], None]


class PoolOwnership(Protocol):
    """``PoolState.declares_vm``: whether the pool's declared disks hold one of the VM."""

    def declares_vm(self, name: str, vm_id: str) -> bool: ...


@dataclass(frozen=True)
class PoolRef:
    name: str
    path: str | None

    @classmethod
    def parse(cls, args: Mapping[str, Any], key: str) -> PoolRef:
        raw = args.get(key)
        if not isinstance(raw, Mapping):
            raise TaskFailure("validation_failed", f"task argument {key} must be an object")
        return cls(name=_str(raw, "pool_name") or "", path=_str(raw, "pool_path", optional=True))


def _format(args: Mapping[str, Any]) -> str:
    fmt = args.get("format") or "qcow2"
    if fmt not in formats.FORMATS:
        raise TaskFailure("unsupported_format", f"disk format {fmt!r} (want qcow2 or raw)")
    return str(fmt)


@dataclass(frozen=True)
class MoveArgs:
    vm_id: str
    format: str
    source: PoolRef
    target: PoolRef

    @classmethod
    def parse(cls, args: Mapping[str, Any]) -> MoveArgs:
        return cls(
            vm_id=_vm_id(args),
            format=_format(args),
            source=PoolRef.parse(args, "source"),
            target=PoolRef.parse(args, "target"),
        )


@dataclass(frozen=True)
class RemoveArgs:
    vm_id: str
    format: str
    pool: PoolRef
    keep: PoolRef | None

    @classmethod
    def parse(cls, args: Mapping[str, Any]) -> RemoveArgs:
        return cls(
            vm_id=_vm_id(args),
            format=_format(args),
            pool=PoolRef(
                name=_str(args, "pool_name") or "", path=_str(args, "pool_path", optional=True)
            ),
            keep=PoolRef.parse(args, "keep") if args.get("keep") is not None else None,
        )


class _Pacer:
    """Progress over one phase, sleeping so the bytes read average at most ``rate``/s."""

    def __init__(
        self, phase: str, total: int, rate: int | None, progress: MoveProgress | None
    ) -> None:
        self.phase, self.total, self.rate, self.progress = phase, total, rate, progress
        self.start = time.monotonic()
        self.done = 0

    def at(self, done: int) -> None:
        self.done = done
        if self.rate:
            wait = pace(done, time.monotonic() - self.start, self.rate)
            if wait > 0:
                time.sleep(wait)
        if self.progress is not None:
            self.progress(self.phase, min(done, self.total), self.total)


def _disk(root: Path, vm: str, fmt: str) -> Path:
    vms = root / VMS_DIR
    path = fs.safe_join(vms, vm, f"disk.{fmt}")
    try:
        fs.ensure_within(root, path.parent)
    except fs.UnsafePath as exc:
        raise TaskFailure("move_failed", str(exc)) from None
    return path


def _regular(path: Path) -> os.stat_result | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TaskFailure("move_failed", f"cannot stat {path}: {fs.strerror(exc)}") from None
    return st if stat.S_ISREG(st.st_mode) else None


def sha256_of(path: Path, pacer: _Pacer) -> str:
    """The file's sha256, its bytes read through ``pacer``."""
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(_READ):
            digest.update(chunk)
            done += len(chunk)
            pacer.at(done)
    return digest.hexdigest()


def move(
    cache: ImageCache,
    pools: PoolResolver,
    args: MoveArgs,
    *,
    progress: MoveProgress | None = None,
    max_bytes_per_second: int | None = None,
    allow_reflink: bool = True,
) -> dict[str, Any]:
    """Copy the VM's disk into the target pool and verify it (module docstring)."""
    src_root = _root(pools, args.source.name, args.source.path)
    dst_root = _root(pools, args.target.name, args.target.path)
    if os.path.realpath(src_root) == os.path.realpath(dst_root):
        raise TaskFailure("validation_failed", "source and target are the same pool")
    src = _disk(src_root, args.vm_id, args.format)
    dst = _disk(dst_root, args.vm_id, args.format)
    key = f"vm:{args.vm_id}"
    keys = sorted([(os.path.realpath(src_root), key), (os.path.realpath(dst_root), key)])
    with cache.locks.hold(keys[0]), cache.locks.hold(keys[1]):
        st = _regular(src)
        if st is None:
            raise TaskFailure(
                "disk_missing", f"the VM's disk {src} is not in pool {args.source.name}"
            )
        size = st.st_size
        method = "existing"
        try:
            source_sha = sha256_of(src, _Pacer("source", size, max_bytes_per_second, progress))
            existing = _Pacer("verify", size, max_bytes_per_second, progress)
            if _regular(dst) is not None and sha256_of(dst, existing) == source_sha:
                copy_sha = source_sha  # a re-run after the copy was published
            else:
                method, copy_sha = _copy(
                    cache,
                    src,
                    dst,
                    dst_root,
                    args,
                    size,
                    source_sha,
                    progress,
                    max_bytes_per_second,
                    allow_reflink,
                )
        except OSError as exc:
            code = "pool_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "move_failed"
            message = f"moving the disk of vm {args.vm_id}: {fs.strerror(exc)}"
            raise TaskFailure(code, message) from None
        info = formats.info(dst, "raw" if args.format == "raw" else "qcow2", code="clone_failed")
    return {
        "vm_id": args.vm_id,
        "file_path": _node_path(dst_root, args.target.path, dst),
        "method": method,
        "sha256": copy_sha,
        "bytes": size,
        "virtual_size_bytes": info.virtual_size_bytes,
        "disk_size_bytes": info.actual_size_bytes,
    }


def _copy(
    cache: ImageCache,
    src: Path,
    dst: Path,
    dst_root: Path,
    args: MoveArgs,
    size: int,
    source_sha: str,
    progress: MoveProgress | None,
    rate: int | None,
    allow_reflink: bool,
) -> tuple[str, str]:
    """Copy ``src`` to a scratch temp in the target, verify it, publish it as ``dst``."""

    def room(need: int) -> None:
        free = fs.disk_usage(dst_root).available_bytes
        if need > free:
            raise TaskFailure(
                "insufficient_space",
                f"pool {args.target.name} has {free} bytes free; the disk needs {need}",
            )

    copy = _Pacer("copy", size, rate, progress)
    with cache.scratch.file(dst_root, f"move-{args.vm_id}") as tmp:
        method = fs_clone.clone_file(
            src,
            tmp,
            mode=DISK_MODE,
            allow_reflink=allow_reflink,
            before_copy=room,
            progress=copy.at,
            step=_STEP,
        )
        copy_sha = sha256_of(tmp, _Pacer("verify", size, rate, progress))
        if copy_sha != source_sha:
            raise TaskFailure(
                "checksum_mismatch",
                f"the copy of vm {args.vm_id}'s disk hashes to {copy_sha}, "
                f"the source to {source_sha}: nothing was switched",
                details={"sha256_expected": source_sha, "sha256_found": copy_sha},
            )
        fs.make_dir(dst.parent, _DIR_MODE)
        fs.publish(tmp, dst, DISK_MODE)
    return method, copy_sha


def remove_copy(
    cache: ImageCache, pools: PoolResolver, owned: PoolOwnership, args: RemoveArgs
) -> dict[str, Any]:
    """Remove the copy a move left in ``args.pool`` (module docstring); idempotent."""
    root = _root(pools, args.pool.name, args.pool.path)
    if owned.declares_vm(args.pool.name, args.vm_id):
        raise TaskFailure(
            "disk_owned",
            f"pool {args.pool.name} holds vm {args.vm_id}'s disk again: nothing removed",
        )
    if args.keep is not None:
        keep_root = _root(pools, args.keep.name, args.keep.path)
        if _regular(_disk(keep_root, args.vm_id, args.format)) is None:
            raise TaskFailure(
                "keep_missing",
                f"vm {args.vm_id}'s disk is not in pool {args.keep.name}: "
                f"the copy in pool {args.pool.name} is kept",
            )
    vms = root / VMS_DIR
    if not vms.is_dir():
        return {"vm_id": args.vm_id, "removed": False}
    with cache.locks.hold((os.path.realpath(root), f"vm:{args.vm_id}")):
        try:
            removed = fs.remove_tree(vms, fs.safe_join(vms, args.vm_id), protected=cache.protected)
        except fs.UnsafePath as exc:
            raise TaskFailure("move_failed", str(exc)) from None
    return {"vm_id": args.vm_id, "removed": removed}

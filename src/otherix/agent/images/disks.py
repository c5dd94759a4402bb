"""VM disks: materialising ``{pool}/vms/{vm-id}/disk.{qcow2|raw}`` from a cached image.

Owns the VM disk files of a pool. The agent daemon calls
:func:`materialise_disk` for a ``vm.create`` (after ``ImageCache.ensure_image``)
and :func:`remove_disk` for a VM delete. Every write goes through
``otherix.agent.fs``; ``qemu-img`` calls through ``formats``.

A disk never depends on the cache: it is a reflink (``FICLONE``, where the
filesystem shares extents: btrfs, XFS with reflink, bcachefs) or a full,
sparse-aware byte copy of the cached image, or a ``qemu-img convert`` when
the requested format differs from the image's; never a qcow2 overlay with
the cache as backing file. So the cache can be replaced or swept at any time.

Steps, under a per-(pool, vm) lock:

1. ``vm_id`` must be a UUID (the directory uses its canonical lowercase form).
2. A disk already at ``vms/{vm}/disk.qcow2`` or ``disk.raw`` is returned as is
   (a redelivered create; the disk is not re-materialised or resized).
3. The image must be a regular file inside the pool's ``images/``; its format
   is sniffed and its virtual size read with ``qemu-img info``.
4. Size: ``disk_gib`` 0 means the image's virtual size; ``disk_gib × 2^30``
   smaller than it is ``disk_too_small`` (checked before anything is written);
   larger means ``qemu-img resize`` after the clone.
5. The clone is built as ``scratch/disk-{vm}.{uuid}.tmp`` (swept if the agent
   dies), fsynced, then renamed to its final name (0600) and the directory
   fsynced. On failure nothing is left: no temp file, and no ``vms/{vm}/``
   directory if this call created it.

``DiskResult.virtual_size_bytes`` is the disk's size as the guest sees it
(after any resize); ``disk_size_bytes`` is what it occupies on the host
(``qemu-img info`` ``actual-size``; near 0 for a reflink until written).
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from otherix.agent import fs, fs_clone
from otherix.agent.images import entries, formats, scratch
from otherix.agent.images.errors import ImageError, ImageErrorCode
from otherix.agent.images.formats import ImageFormat
from otherix.agent.images.locks import KeyedLocks
from otherix.agent.images.progress import Progress, Throttle

__all__ = ["VMS_DIR", "DiskResult", "canonical_vm_id", "materialise_disk", "remove_disk"]

VMS_DIR: Final = "vms"
DISK_MODE: Final = 0o600
_DIR_MODE: Final = 0o750
_NO_SPACE: Final = frozenset({errno.ENOSPC, errno.EDQUOT})

Method = Literal["existing", "reflink", "copy", "convert"]


@dataclass(frozen=True)
class DiskResult:
    """A VM's disk file and its sizes (see the module docstring)."""

    path: Path
    format: ImageFormat
    virtual_size_bytes: int
    disk_size_bytes: int
    #: How it was made: ``existing`` (redelivery), ``reflink``, ``copy`` or ``convert``.
    method: Method


def canonical_vm_id(vm_id: str) -> str:
    """The canonical lowercase form of a UUID; ValueError if ``vm_id`` is not one."""
    try:
        return str(uuid.UUID(vm_id))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"vm_id must be a UUID, got {vm_id!r}") from exc


def _vm_dir(root: Path, vm: str) -> Path:
    vms = root / VMS_DIR
    if not vms.is_dir():
        raise ImageError(
            "clone_failed", f"pool {root} is not materialised (vms/ missing)", retryable=True
        )
    vm_dir = fs.safe_join(vms, vm)
    try:
        fs.ensure_within(root, vm_dir)
    except fs.UnsafePath as exc:
        raise ImageError("clone_failed", str(exc), retryable=False) from exc
    return vm_dir


def _existing(vm_dir: Path, fmt: ImageFormat) -> DiskResult | None:
    for candidate in (fmt, *(f for f in formats.FORMATS if f != fmt)):
        path = vm_dir / f"disk.{candidate}"
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            info = formats.info(path, candidate, code="clone_failed")
            return DiskResult(
                path, candidate, info.virtual_size_bytes, info.actual_size_bytes, "existing"
            )
    return None


def _source(root: Path, image_path: Path) -> tuple[ImageFormat, formats.ImageInfo]:
    try:
        fs.ensure_within(root / entries.IMAGES_DIR, image_path)
    except fs.UnsafePath as exc:
        raise ImageError(
            "image_unavailable", f"{image_path} is not in the pool's image cache"
        ) from exc
    try:
        st = os.lstat(image_path)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            raise ImageError("image_unavailable", f"{image_path} is not a cached image")
        with open(image_path, "rb") as f:
            head = f.read(formats.HEAD_BYTES)
    except OSError as exc:
        raise ImageError(
            "image_unavailable", f"cannot read {image_path}: {fs.strerror(exc)}", retryable=True
        ) from exc
    fmt = formats.check_header(head)
    return fmt, formats.info(image_path, fmt, code="clone_failed")


def _check_room(root: Path, need: int, what: str) -> None:
    free = fs.disk_usage(root).available_bytes
    if need > free:
        raise ImageError("pool_full", f"pool {root} has {free} bytes free; {what} needs {need}")


def _build(
    root: Path,
    tmp: Path,
    image_path: Path,
    src: tuple[ImageFormat, formats.ImageInfo],
    fmt: ImageFormat,
    target: int,
    throttle: Throttle,
    allow_reflink: bool,
) -> tuple[Method, formats.ImageInfo]:
    """Clone or convert ``image_path`` into ``tmp``, resize it, return how and its info."""
    src_fmt, src_info = src
    method: Method
    if src_fmt == fmt:
        method = fs_clone.clone_file(
            image_path,
            tmp,
            mode=DISK_MODE,
            allow_reflink=allow_reflink,
            before_copy=lambda need: _check_room(root, need, "a copy of the image"),
            progress=throttle.update,
        )
    else:
        _check_room(root, src_info.actual_size_bytes, f"a {fmt} conversion of the image")
        total = throttle.total or 0
        formats.convert(
            image_path,
            src_fmt,
            tmp,
            fmt,
            progress=lambda fraction: throttle.update(int(fraction * total)),
        )
        method = "convert"
    if target > src_info.virtual_size_bytes:
        formats.resize(tmp, fmt, target)
    fs.fsync_path(tmp)
    return method, formats.info(tmp, fmt, code="clone_failed")


def materialise_disk(
    pool_root: Path | str,
    vm_id: str,
    image_path: Path | str,
    format: ImageFormat,
    disk_gib: int,
    *,
    scratch_area: scratch.ScratchArea,
    locks: KeyedLocks,
    protected: fs.ProtectedRoots,
    progress: Progress | None = None,
    allow_reflink: bool = True,
) -> DiskResult:
    """Create (or find) the VM's disk in the pool, from a cached image (module docstring).

    Raises ``ImageError``: ``disk_too_small``, ``unsupported_format``,
    ``image_unavailable``, ``pool_full``, ``clone_failed``. ValueError for a
    ``vm_id`` that is not a UUID or a negative ``disk_gib``.
    """
    root = Path(pool_root)
    image = Path(image_path)
    vm = canonical_vm_id(vm_id)
    if format not in formats.FORMATS:
        raise ImageError("unsupported_format", f"disk format {format!r} (want qcow2 or raw)")
    if isinstance(disk_gib, bool) or not isinstance(disk_gib, int) or disk_gib < 0:
        raise ValueError(f"disk_gib must be a non-negative integer, got {disk_gib!r}")
    vm_dir = _vm_dir(root, vm)
    with locks.hold((os.path.realpath(root), f"vm:{vm}")):
        found = _existing(vm_dir, format)
        if found is not None:
            return found
        src = _source(root, image)
        virtual = src[1].virtual_size_bytes
        target = disk_gib << 30 if disk_gib else virtual
        if target < virtual:
            raise ImageError(
                "disk_too_small",
                f"disk_gib {disk_gib} ({target} bytes) is smaller than the image's "
                f"virtual size ({virtual} bytes)",
            )
        total = os.stat(image).st_size if src[0] == format else virtual
        throttle = Throttle(progress, total)
        created_dir = not vm_dir.exists()
        final = vm_dir / f"disk.{format}"
        try:
            with scratch_area.file(root, f"disk-{vm}") as tmp:
                method, info = _build(
                    root, tmp, image, src, format, target, throttle, allow_reflink
                )
                fs.make_dir(vm_dir, _DIR_MODE)
                fs.publish(tmp, final, DISK_MODE)
        except BaseException as exc:
            if created_dir:
                fs.remove_tree(root / VMS_DIR, vm_dir, protected=protected)
            if isinstance(exc, OSError):
                code: ImageErrorCode = "pool_full" if exc.errno in _NO_SPACE else "clone_failed"
                raise ImageError(code, f"making disk for vm {vm}: {fs.strerror(exc)}") from exc
            raise
        throttle.finish(total)
        return DiskResult(final, format, info.virtual_size_bytes, info.actual_size_bytes, method)


def remove_disk(
    pool_root: Path | str, vm_id: str, *, locks: KeyedLocks, protected: fs.ProtectedRoots
) -> bool:
    """Remove ``{pool}/vms/{vm-id}/`` and everything in it; False if it was not there.

    Refused (``clone_failed``, not retryable) when the directory is, holds or
    lies inside the root of another pool declared on this node (``protected``).
    """
    root = Path(pool_root)
    vm = canonical_vm_id(vm_id)
    vms = root / VMS_DIR
    if not vms.is_dir():
        return False
    with locks.hold((os.path.realpath(root), f"vm:{vm}")):
        try:
            return fs.remove_tree(vms, fs.safe_join(vms, vm), protected=protected)
        except fs.UnsafePath as exc:
            raise ImageError("clone_failed", str(exc), retryable=False) from exc

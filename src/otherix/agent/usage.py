"""What a pool's own directories hold: VM disks, the image cache, scratch (issue 16).

``measure(root)`` walks a ready pool's ``vms/``, ``images/`` and ``scratch/``
(each by its real path, which must lie inside the pool's, as the reconciler
requires) with ``os.scandir`` and ``lstat`` only, every directory below them
opened ``O_NOFOLLOW`` relative to its parent's descriptor (no symlink
followed, not even one swapped in mid-walk; no file opened but a qcow2
disk's first 512 bytes), and returns a :class:`Usage`:

- ``vm_disk_bytes``: allocated bytes (``st_blocks * 512``) of every
  ``vms/{vm-id}/disk.qcow2`` and ``disk.raw`` (regular files only);
- ``vm_provisioned_bytes``: their virtual size: a qcow2 disk's header size
  field (``images.formats.header_virtual_size``, no ``qemu-img``: a node with
  hundreds of disks must stay cheap to measure), a raw disk's file size;
- ``image_cache_bytes`` / ``scratch_bytes``: allocated bytes of every regular
  file below ``images/`` / ``scratch/`` (sidecars and leftovers included:
  they take the space).

A file or directory that disappears during the walk (a VM deleted, a download
committed) is skipped; so is anything else the walk cannot read, with a warning naming
the first such file (the numbers are then a lower bound). A missing top-level
directory counts 0. ``PoolState`` (``otherix.agent.report``) calls this at
most every ``storage.usage_interval`` per pool, and at once after a VM task
(``refresh_images``) or a scan, so the cost does not grow with the reconcile
rate.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from otherix.agent.images.formats import HEAD_BYTES, QCOW2_MAGIC, header_virtual_size

__all__ = ["DISK_NAMES", "Usage", "measure"]

_log = logging.getLogger(__name__)

#: The file names a VM disk has in ``vms/{vm-id}/`` (``images.disks``).
DISK_NAMES: Final = ("disk.qcow2", "disk.raw")
#: Bounds the walk's depth below ``images/`` and ``scratch/`` (the layout is flat or one
#: level deep; a deeper tree is not ours, and is then not counted further down).
_MAX_DEPTH: Final = 8


@dataclass(frozen=True, slots=True)
class Usage:
    vm_disk_bytes: int = 0
    vm_provisioned_bytes: int = 0
    image_cache_bytes: int = 0
    scratch_bytes: int = 0

    def to_wire(self) -> dict[str, int]:
        return {
            "vm_disk_bytes": self.vm_disk_bytes,
            "vm_provisioned_bytes": self.vm_provisioned_bytes,
            "image_cache_bytes": self.image_cache_bytes,
            "scratch_bytes": self.scratch_bytes,
        }


def _allocated(st: os.stat_result) -> int:
    return int(getattr(st, "st_blocks", 0)) * 512


_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Walk:
    """One measurement, by directory descriptors: each level is opened with
    ``O_NOFOLLOW`` relative to its parent, so a directory swapped for a symlink
    mid-walk is never entered. Remembers the first problem it met, for one warning."""

    def __init__(self) -> None:
        self.problem: str | None = None

    def _note(self, exc: OSError, where: str) -> None:
        if self.problem is None:
            self.problem = f"{where}: {exc.strerror or exc}"

    def _open(self, name: str, dir_fd: int | None, where: str, follow: bool = False) -> int | None:
        flags = _DIR_FLAGS & ~os.O_NOFOLLOW if follow else _DIR_FLAGS
        try:
            return os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):  # a file or a symlink: not ours
                self._note(exc, where)
            return None

    def _entries(self, fd: int, where: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(fd) as it:
                return list(it)
        except OSError as exc:
            self._note(exc, where)
            return []

    def _lstat(self, entry: os.DirEntry[str], where: str) -> os.stat_result | None:
        try:
            return entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._note(exc, f"{where}/{entry.name}")
            return None

    def tree_bytes(
        self, name: str, dir_fd: int | None, where: str, depth: int = 0, *, follow: bool = False
    ) -> int:
        """Allocated bytes of the regular files below ``name`` (no symlink followed
        below it; ``name`` itself only when ``follow``)."""
        fd = self._open(name, dir_fd, where, follow)
        if fd is None:
            return 0
        try:
            total = 0
            for entry in self._entries(fd, where):
                st = self._lstat(entry, where)
                if st is None:
                    continue
                if stat.S_ISREG(st.st_mode):
                    total += _allocated(st)
                elif stat.S_ISDIR(st.st_mode) and depth < _MAX_DEPTH:
                    total += self.tree_bytes(entry.name, fd, f"{where}/{entry.name}", depth + 1)
            return total
        finally:
            os.close(fd)

    def _virtual(self, entry: os.DirEntry[str], dir_fd: int, size: int, where: str) -> int:
        """A qcow2 disk's header size (its file size when the header is not qcow2)."""
        try:
            fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                head = os.pread(fd, HEAD_BYTES, 0)
            finally:
                os.close(fd)
        except OSError as exc:
            if not isinstance(exc, FileNotFoundError):
                self._note(exc, f"{where}/{entry.name}")
            return size
        if not head.startswith(QCOW2_MAGIC):
            return size
        return header_virtual_size(head, size) or size

    def _vm_disks(self, fd: int, where: str) -> tuple[int, int]:
        allocated = virtual = 0
        for entry in self._entries(fd, where):
            if entry.name not in DISK_NAMES:
                continue
            st = self._lstat(entry, where)
            if st is None or not stat.S_ISREG(st.st_mode):
                continue
            allocated += _allocated(st)
            if entry.name.endswith(".qcow2"):
                virtual += self._virtual(entry, fd, st.st_size, where)
            else:
                virtual += st.st_size
        return allocated, virtual

    def vms(self, name: str, where: str) -> tuple[int, int]:
        """(allocated, virtual) of the disks in ``name``'s VM directories (a real path)."""
        fd = self._open(name, None, where, follow=True)
        if fd is None:
            return 0, 0
        allocated = virtual = 0
        try:
            for entry in self._entries(fd, where):
                vm_fd = self._open(entry.name, fd, f"{where}/{entry.name}")
                if vm_fd is None:
                    continue
                try:
                    a, v = self._vm_disks(vm_fd, f"{where}/{entry.name}")
                finally:
                    os.close(vm_fd)
                allocated += a
                virtual += v
        finally:
            os.close(fd)
        return allocated, virtual


def _inside(base: str, sub: str) -> str | None:
    """The real path of the pool's ``sub`` directory when it lies inside the pool's
    (the reconciler lets a subdirectory be a symlink within the pool, so does this)."""
    real_root = os.path.realpath(base)
    real = os.path.realpath(os.path.join(base, sub))
    if real == real_root or os.path.commonpath([real_root, real]) != real_root:
        return None
    return real


def measure(root: Path | str) -> Usage:
    """Measure the pool at ``root`` now (see the module docstring). Never raises OSError."""
    walk = _Walk()
    base = os.fspath(root)

    def tree(sub: str) -> int:
        real = _inside(base, sub)
        return 0 if real is None else walk.tree_bytes(real, None, f"{base}/{sub}", follow=True)

    vms_dir = _inside(base, "vms")
    disk_bytes, provisioned = (0, 0) if vms_dir is None else walk.vms(vms_dir, f"{base}/vms")
    usage = Usage(
        vm_disk_bytes=disk_bytes,
        vm_provisioned_bytes=provisioned,
        image_cache_bytes=tree("images"),
        scratch_bytes=tree("scratch"),
    )
    if walk.problem is not None:
        _log.warning(
            "pool usage is a lower bound: some files could not be read",
            extra={"root": base, "error": walk.problem},
        )
    return usage

"""What a pool's own directories hold: VM disks, the image cache, scratch (issue 16).

``measure(root)`` walks a ready pool's ``vms/``, ``images/`` and ``scratch/``
with ``os.scandir`` and ``lstat`` only (never a symlink followed, never a file
opened but a VM disk's first 512 bytes) and returns a :class:`Usage`:

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


class _Walk:
    """One measurement; remembers the first problem it met, for one warning."""

    def __init__(self) -> None:
        self.problem: str | None = None

    def _note(self, exc: OSError) -> None:
        if self.problem is None:
            self.problem = f"{exc.filename}: {exc.strerror or exc}"

    def _entries(self, path: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(path) as it:
                return list(it)
        except FileNotFoundError:
            return []
        except OSError as exc:
            self._note(exc)
            return []

    def tree_bytes(self, path: str, depth: int = 0) -> int:
        """Allocated bytes of the regular files below ``path`` (no symlink followed)."""
        total = 0
        for entry in self._entries(path):
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                self._note(exc)
                continue
            if stat.S_ISREG(st.st_mode):
                total += _allocated(st)
            elif stat.S_ISDIR(st.st_mode) and depth < _MAX_DEPTH:
                total += self.tree_bytes(entry.path, depth + 1)
        return total

    def disk(self, path: str) -> tuple[int, int] | None:
        """(allocated, virtual) of one VM disk file, or None if it is not a regular file."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._note(exc)
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        virtual = st.st_size
        if path.endswith(".qcow2"):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    head = os.pread(fd, HEAD_BYTES, 0)
                finally:
                    os.close(fd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                self._note(exc)
                head = b""
            if head.startswith(QCOW2_MAGIC):
                virtual = header_virtual_size(head, st.st_size) or st.st_size
        return _allocated(st), virtual

    def vms(self, path: str) -> tuple[int, int]:
        allocated = virtual = 0
        for entry in self._entries(path):
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
            except OSError as exc:
                self._note(exc)
                continue
            for name in DISK_NAMES:
                found = self.disk(os.path.join(entry.path, name))
                if found is not None:
                    allocated += found[0]
                    virtual += found[1]
        return allocated, virtual


def measure(root: Path | str) -> Usage:
    """Measure the pool at ``root`` now (see the module docstring). Never raises OSError."""
    walk = _Walk()
    base = os.fspath(root)
    disk_bytes, provisioned = walk.vms(os.path.join(base, "vms"))
    usage = Usage(
        vm_disk_bytes=disk_bytes,
        vm_provisioned_bytes=provisioned,
        image_cache_bytes=walk.tree_bytes(os.path.join(base, "images")),
        scratch_bytes=walk.tree_bytes(os.path.join(base, "scratch")),
    )
    if walk.problem is not None:
        _log.warning(
            "pool usage is a lower bound: some files could not be read",
            extra={"root": base, "error": walk.problem},
        )
    return usage

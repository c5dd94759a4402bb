"""Cloning a file for a VM disk: reflink where the filesystem allows, else a
sparse-aware byte copy. Split from ``otherix.agent.fs`` (whose safety rules it
uses: exclusive creation, removal of a half-made copy); called by the VM disk
code in ``otherix.agent.images.disks``.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal

from otherix.agent.fs import create_exclusive, remove_file

__all__ = ["FICLONE", "CloneMethod", "clone_file", "copy_data", "reflink"]

#: ``ioctl(dest_fd, FICLONE, src_fd)``: share the source's extents (btrfs, XFS, bcachefs).
FICLONE: Final = 0x40049409
#: errnos meaning "this filesystem (pair) cannot reflink": fall back to copying.
_NO_REFLINK: Final = frozenset(
    {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.ENOSYS}
)
#: errnos meaning "copy_file_range cannot do this pair": fall back to pread/pwrite.
_NO_COPY_RANGE: Final = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM}
)
_COPY_STEP: Final = 64 * 1024 * 1024
_RW_BUFFER: Final = 1024 * 1024

CloneMethod = Literal["reflink", "copy"]


def reflink(src_fd: int, dst_fd: int) -> bool:
    """Make ``dst_fd`` share ``src_fd``'s data (FICLONE); False if the filesystem cannot."""
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
    except OSError as exc:
        if exc.errno in _NO_REFLINK:
            return False
        raise
    return True


def _data_segments(fd: int, size: int) -> list[tuple[int, int]]:
    """``(start, end)`` of the data (non-hole) ranges of ``fd``; one range without SEEK_DATA."""
    segments: list[tuple[int, int]] = []
    offset = 0
    try:
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            if end > start:
                segments.append((start, end))
            offset = end
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        return [(0, size)] if size else []
    return segments


def _copy_range_rw(src_fd: int, dst_fd: int, start: int, end: int) -> None:
    offset = start
    while offset < end:
        chunk = os.pread(src_fd, min(_RW_BUFFER, end - offset), offset)
        if not chunk:
            raise OSError(errno.EIO, f"source shrank while copying (at {offset})")
        view = memoryview(chunk)
        while view:
            written = os.pwrite(dst_fd, view, offset)
            view = view[written:]
            offset += written


def copy_data(
    src_fd: int,
    dst_fd: int,
    progress: Callable[[int], None] | None = None,
    *,
    step: int = _COPY_STEP,
) -> None:
    """Copy every byte of ``src_fd`` into the empty ``dst_fd``, keeping holes as holes.

    Walks the source's data ranges (SEEK_DATA/SEEK_HOLE) and copies each with
    ``copy_file_range`` (in-kernel; pread/pwrite where unsupported), then sets
    the size, so a sparse image stays sparse. ``progress(offset)`` is called
    after each step of at most ``step`` bytes (64 MiB).
    """
    size = os.fstat(src_fd).st_size
    use_copy_range = True
    for start, end in _data_segments(src_fd, size):
        offset = start
        while offset < end:
            length = min(step, end - offset)
            if use_copy_range:
                try:
                    n = os.copy_file_range(src_fd, dst_fd, length, offset, offset)
                except OSError as exc:
                    if exc.errno not in _NO_COPY_RANGE:
                        raise
                    use_copy_range = False
                    continue
                if n == 0:
                    raise OSError(errno.EIO, f"source shrank while copying (at {offset})")
            else:
                _copy_range_rw(src_fd, dst_fd, offset, offset + length)
                n = length
            offset += n
            if progress is not None:
                progress(offset)
    os.ftruncate(dst_fd, size)
    if progress is not None:
        progress(size)


def clone_file(
    src: Path,
    dst: Path,
    *,
    mode: int = 0o600,
    allow_reflink: bool = True,
    before_copy: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
    step: int = _COPY_STEP,
) -> CloneMethod:
    """Create ``dst`` (must not exist) as an independent copy of ``src``; fsynced.

    A reflink when the filesystem allows (instant, no extra space until either
    file is written), else a sparse-aware byte copy; ``before_copy(bytes)``,
    given the source's allocated bytes, may veto the copy by raising (a room
    check). ``dst`` is removed again if anything fails. Returns which of the
    two happened.
    """
    src_fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dst_fd = create_exclusive(dst, mode)
        try:
            method: CloneMethod = "copy"
            if allow_reflink and reflink(src_fd, dst_fd):
                method = "reflink"
                if progress is not None:
                    progress(os.fstat(src_fd).st_size)
            else:
                if before_copy is not None:
                    before_copy(os.fstat(src_fd).st_blocks * 512)
                copy_data(src_fd, dst_fd, progress, step=step)
            os.fsync(dst_fd)
        except BaseException:
            os.close(dst_fd)
            remove_file(dst)
            raise
        os.close(dst_fd)
    finally:
        os.close(src_fd)
    return method

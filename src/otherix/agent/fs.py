"""Filesystem primitives of the node agent: the one place the agent writes to disk.

Owns the safety rules every agent write follows: a name is checked to be one
safe path segment before it is joined (``safe_segment``/``safe_join``), a
target's realpath is checked against its root before it is written
(``ensure_within``), files are replaced atomically (temp file in the same
directory, fsync, rename, fsync of the directory), directories get an exact
mode whatever the process umask is (``make_dir``).

Callers: the pool reconciler (``otherix.agent.pools``) and the image cache and
VM disk code (``otherix.agent.images``), which also use the large-file helpers
at the end: exclusive creation (``create_exclusive``), publishing a finished
file under its final name (``publish``), cloning a file by reflink or a
sparse-aware byte copy (``clone_file``). Nothing outside ``otherix.agent``
uses this module. Apart from its own temp and probe files, this module deletes
only what a caller names explicitly: one file (``remove_file``) or one tree
checked to lie inside a root (``remove_tree``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

__all__ = [
    "FICLONE",
    "WRITE_PROBE_NAME",
    "CloneMethod",
    "UnsafePath",
    "Usage",
    "atomic_write",
    "clone_file",
    "copy_data",
    "create_exclusive",
    "disk_usage",
    "ensure_within",
    "first_symlinked_ancestor",
    "fsync_dir",
    "fsync_path",
    "make_dir",
    "publish",
    "reflink",
    "remove_file",
    "remove_tree",
    "safe_join",
    "safe_segment",
    "strerror",
    "write_all",
    "write_probe",
]

#: Name of the file ``write_probe`` creates and removes again.
WRITE_PROBE_NAME = ".otherix-write-probe"

_MAX_SEGMENT_BYTES = 255


class UnsafePath(ValueError):
    """A name or path would leave the directory it is meant to stay in."""


@dataclass(frozen=True)
class Usage:
    """Space on the filesystem holding a path, in bytes."""

    capacity_bytes: int
    available_bytes: int


def safe_segment(name: str) -> str:
    """Return ``name`` if it is exactly one safe path segment, else raise UnsafePath.

    Safe means: non-empty, not ``.`` or ``..``, no ``/``, no NUL, and at most
    255 bytes once encoded for the filesystem.
    """
    if not name:
        raise UnsafePath("path segment is empty")
    if name in (".", ".."):
        raise UnsafePath(f"path segment {name!r} is not allowed")
    if "/" in name:
        raise UnsafePath(f"path segment {name!r} contains '/'")
    if "\x00" in name:
        raise UnsafePath(f"path segment {name!r} contains NUL")
    try:
        encoded = os.fsencode(name)
    except UnicodeError as exc:
        raise UnsafePath(f"path segment {name!r} cannot be encoded") from exc
    if len(encoded) > _MAX_SEGMENT_BYTES:
        raise UnsafePath(f"path segment is {len(encoded)} bytes, more than {_MAX_SEGMENT_BYTES}")
    return name


def safe_join(root: Path, *segments: str) -> Path:
    """Join ``segments`` under ``root``, each checked with ``safe_segment``."""
    path = root
    for segment in segments:
        path = path / safe_segment(segment)
    return path


def ensure_within(root: Path, target: Path) -> Path:
    """Return the realpath of ``target`` if it equals or lies inside ``root``'s realpath.

    Symlinks are resolved on both sides, so a symlink under ``root`` that
    points elsewhere is caught. Raises UnsafePath otherwise.
    """
    root_real = os.path.realpath(root)
    real = os.path.realpath(target)
    if real != root_real and os.path.commonpath([root_real, real]) != root_real:
        raise UnsafePath(f"{target} resolves to {real}, outside {root_real}")
    return Path(real)


def first_symlinked_ancestor(path: Path) -> Path | None:
    """Return the first existing proper ancestor of ``path`` that is a symlink, if any.

    Walks from the top (``/``) down and stops at the first component that does
    not exist (it will be created as a real directory) or is not a directory.
    ``path`` itself is not examined.
    """
    for ancestor in reversed(path.parents):
        if ancestor == ancestor.parent:  # the filesystem root
            continue
        if os.path.islink(ancestor):
            return ancestor
        if not os.path.isdir(ancestor):
            return None
    return None


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (after a create, rename or unlink in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a mix.

    Writes a temp file in the same directory (created with O_EXCL and exactly
    ``mode``), fsyncs it, renames it over ``path`` and fsyncs the directory.
    The temp file is removed if anything fails before the rename.
    """
    directory = path.parent
    tmp = directory / f".{path.name}.tmp-{secrets.token_hex(8)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode)
    try:
        try:
            os.fchmod(fd, mode)  # exact mode, whatever the umask
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def make_dir(path: Path, mode: int = 0o750) -> None:
    """``mkdir -p path`` and set the final directory to exactly ``mode``; idempotent.

    Missing parents are created with the default mode. An existing non-directory
    at ``path`` raises FileExistsError (or NotADirectoryError from a parent).
    """
    os.makedirs(path, mode=mode, exist_ok=True)
    os.chmod(path, mode)


def write_probe(directory: Path) -> None:
    """Prove ``directory`` is writable: create, write, fsync and remove a probe file.

    The probe is created with O_EXCL and mode 0600. A probe left behind by a
    crash is removed and the probe retried once.
    """
    probe = directory / WRITE_PROBE_NAME
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(probe, flags, 0o600)
    except FileExistsError:
        os.unlink(probe)  # ours, stale from an interrupted earlier probe
        fd = os.open(probe, flags, 0o600)
    try:
        _write_all(fd, b"\x00")
        os.fsync(fd)
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(probe)


def disk_usage(path: Path) -> Usage:
    """Capacity and space available to unprivileged users, from statvfs(path)."""
    st = os.statvfs(path)
    return Usage(
        capacity_bytes=st.f_blocks * st.f_frsize,
        available_bytes=st.f_bavail * st.f_frsize,
    )


def strerror(exc: OSError) -> str:
    """The OS message of ``exc`` (``"Not a directory"``), falling back to str(exc)."""
    if exc.strerror:
        return exc.strerror
    if exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc)


# --- large files: the image cache and VM disks --------------------------------

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


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def create_exclusive(path: Path, mode: int = 0o600) -> int:
    """Create ``path`` (which must not exist, and is never followed if a symlink) for writing.

    Returns the file descriptor; the file has exactly ``mode`` whatever the umask.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def fsync_path(path: Path) -> None:
    """Flush a finished file's data to disk (e.g. one written by ``qemu-img``)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(src: Path, dst: Path, mode: int) -> None:
    """Give the finished file ``src`` its final name ``dst``, replacing any file there.

    Sets exactly ``mode``, fsyncs the file, renames it (atomic: readers see the
    old or the new file), then fsyncs the destination directory and, if it
    differs, the source directory. Both must be on the same filesystem.
    """
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(src, dst)
    fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)


def remove_file(path: Path) -> bool:
    """Unlink ``path`` (a symlink itself, never its target); False if it was not there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def remove_tree(root: Path, target: Path) -> bool:
    """Remove ``target`` (a directory tree, a file or a symlink) if it lies inside ``root``.

    ``target``'s parent must resolve inside ``root``'s realpath and ``target``
    must not be ``root`` itself; raises UnsafePath otherwise. A symlink is
    removed, not followed; ``shutil.rmtree`` never follows symlinks inside the
    tree. Idempotent: False if nothing was there.
    """
    parent = ensure_within(root, target.parent)  # so target itself is never root
    victim = parent / safe_segment(target.name)
    try:
        st = os.lstat(victim)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(victim)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(victim)
    fsync_dir(parent)
    return True


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


def copy_data(src_fd: int, dst_fd: int, progress: Callable[[int], None] | None = None) -> None:
    """Copy every byte of ``src_fd`` into the empty ``dst_fd``, keeping holes as holes.

    Walks the source's data ranges (SEEK_DATA/SEEK_HOLE) and copies each with
    ``copy_file_range`` (in-kernel; pread/pwrite where unsupported), then sets
    the size, so a sparse image stays sparse. ``progress(offset)`` is called
    after each step of at most 64 MiB.
    """
    size = os.fstat(src_fd).st_size
    use_copy_range = True
    for start, end in _data_segments(src_fd, size):
        offset = start
        while offset < end:
            step = min(_COPY_STEP, end - offset)
            if use_copy_range:
                try:
                    n = os.copy_file_range(src_fd, dst_fd, step, offset, offset)
                except OSError as exc:
                    if exc.errno not in _NO_COPY_RANGE:
                        raise
                    use_copy_range = False
                    continue
                if n == 0:
                    raise OSError(errno.EIO, f"source shrank while copying (at {offset})")
            else:
                _copy_range_rw(src_fd, dst_fd, offset, offset + step)
                n = step
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
                copy_data(src_fd, dst_fd, progress)
            os.fsync(dst_fd)
        except BaseException:
            os.close(dst_fd)
            remove_file(dst)
            raise
        os.close(dst_fd)
    finally:
        os.close(src_fd)
    return method

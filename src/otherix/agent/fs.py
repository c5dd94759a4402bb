"""Filesystem primitives of the node agent: the one place the agent writes to disk.

Owns the safety rules every agent write follows: a name is checked to be one
safe path segment before it is joined (``safe_segment``/``safe_join``), a
target's realpath is checked against its root before it is written
(``ensure_within``), files are replaced atomically (``atomic_write``, re-exported
from the shared ``otherix.fsatomic``: temp file in the same directory, fsync,
rename, fsync of the directory), directories get an exact
mode whatever the process umask is (``make_dir``).

Callers: the pool reconciler (``otherix.agent.pools``) and the image cache and
VM disk code (``otherix.agent.images``), which also use the large-file helpers
at the end: exclusive creation (``create_exclusive``), publishing a finished
file under its final name (``publish``), cloning a file by reflink or a
sparse-aware byte copy (``otherix.agent.fs_clone``). Nothing outside ``otherix.agent``
uses this module. Apart from its own temp and probe files, this module deletes
only what a caller names explicitly: one file (``remove_file``) or one tree
checked to lie inside a root (``remove_tree``).

Other pools are never removed from under: the agent's composition root
(``otherix.agent.main``) builds one :class:`ProtectedRoots` per process and
hands it to the pool reconciler, which sets in it the real roots of every
pool declared on this node on each pass, and to the image cache, scratch
sweep and VM disk code, which pass it to ``remove_tree`` (a required
argument). ``remove_tree`` refuses (``UnsafePath``) a path that is, holds or
lies inside another pool's root. So the scratch sweep or a VM delete of one
pool cannot remove a pool nested inside it, or what such a pool holds (rows
that overlap from before the one-directory-one-pool rule). This module keeps
no state of its own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from otherix.fsatomic import atomic_write, fsync_dir, fsync_path, write_all

__all__ = [
    "WRITE_PROBE_NAME",
    "ProtectedRoots",
    "UnsafePath",
    "Usage",
    "atomic_write",
    "create_exclusive",
    "disk_usage",
    "ensure_within",
    "first_symlinked_ancestor",
    "fsync_dir",
    "fsync_path",
    "make_dir",
    "move_file",
    "publish",
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


class ProtectedRoots:
    """Real paths of the pool roots declared on this node (see the module docstring).

    One per agent process, shared by the pool reconciler (``set``) and every
    removal (``held_by``, through ``remove_tree``); thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._roots: frozenset[str] = frozenset()

    def set(self, paths: Iterable[str | Path]) -> None:
        roots = frozenset(os.path.realpath(p) for p in paths)
        with self._lock:
            self._roots = roots

    def held_by(self, target: str | Path, boundary: str | Path) -> str | None:
        """A protected root that a removal of ``target`` inside ``boundary`` would touch.

        Both are real paths. A root that is ``target``, lies inside it or contains
        it counts, unless it is a proper ancestor of ``boundary`` (the pool doing
        the removal, or a pool that holds that whole pool).
        """
        t, b = os.path.normpath(str(target)), os.path.normpath(str(boundary))
        with self._lock:
            roots = self._roots
        for r in sorted(roots):
            if _inside(b, r) and b != r:
                continue
            if r == t or _inside(r, t) or _inside(t, r):
                return r
        return None


def _inside(path: str, root: str) -> bool:
    """``path`` equals ``root`` or lies below it (both normalised, absolute)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


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
        write_all(fd, b"\x00")
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


def move_file(src: Path, dst: Path) -> bool:
    """Rename ``src`` (a file or symlink, never followed) to the new name ``dst`` on the
    same filesystem, never over an existing file, and fsync both directories; False if
    ``src`` was not there. Used to quarantine a damaged cache entry."""
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "destination exists", str(dst))
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        return False
    fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)
    return True


def remove_file(path: Path) -> bool:
    """Unlink ``path`` (a symlink itself, never its target); False if it was not there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def remove_tree(root: Path, target: Path, *, protected: ProtectedRoots) -> bool:
    """Remove ``target`` (a directory tree, a file or a symlink) if it lies inside ``root``.

    ``target``'s parent must resolve inside ``root``'s realpath and ``target``
    must not be ``root`` itself; raises UnsafePath otherwise. A symlink is
    removed, not followed; ``shutil.rmtree`` never follows symlinks inside the
    tree. Idempotent: False if nothing was there. A path that is, holds or
    lies inside the root of another declared pool (``protected``) raises
    UnsafePath and stays: ``root`` should be the pool subdirectory the removal
    is confined to (``scratch/``, ``vms/``), never the pool root itself.
    """
    parent = ensure_within(root, target.parent)  # so target itself is never root
    victim = parent / safe_segment(target.name)
    try:
        st = os.lstat(victim)
    except FileNotFoundError:
        return False
    held = protected.held_by(victim, os.path.realpath(root))
    if held is not None:
        raise UnsafePath(f"{victim} overlaps the root of another pool ({held}); not removed")
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(victim)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(victim)
    fsync_dir(parent)
    return True

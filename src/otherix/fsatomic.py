"""The one atomic, durable file replace, shared by every process.

Owns :func:`atomic_write` (and the fsync and write-all steps it is made of,
which the agent's large-file code uses too): readers of ``path`` see the old
file or the new one, never a mix, and after it returns the new file survives a power cut. The steps:
a temp file ``.{name}.tmp-{16 hex}`` in the same directory, created with
O_EXCL and O_NOFOLLOW and set to exactly ``mode`` whatever the umask; all of
the data written; the file fsynced; renamed over ``path``; the directory
fsynced. The temp file is removed if anything fails before the rename.

Callers: the node agent through ``otherix.agent.fs`` (pool markers, the image
sidecars, the agent state file; its scratch sweep knows the temp name), the
control plane's data-directory marker (``otherix.api.datadir``) and the CLI's
config file (``otherix.cli.config``). Shared and dependency-free: it imports
nothing from a process package.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir", "fsync_path", "write_all"]

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (after a create, rename or unlink in it)."""
    _fsync(path, os.O_DIRECTORY)


def fsync_path(path: Path) -> None:
    """Flush a finished file's data to disk (e.g. one written by ``qemu-img``); never
    follows a symlink."""
    _fsync(path, os.O_NOFOLLOW)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a mix.

    Writes a temp file in the same directory (created with O_EXCL and exactly
    ``mode``), fsyncs it, renames it over ``path`` and fsyncs the directory.
    The temp file is removed if anything fails before the rename.
    """
    directory = path.parent
    tmp = directory / f".{path.name}.tmp-{secrets.token_hex(8)}"
    fd = os.open(tmp, _CREATE_FLAGS, mode)
    try:
        try:
            os.fchmod(fd, mode)  # exact mode, whatever the umask
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)

"""Scratch files of a pool: naming, in-use tracking, and the sweep of leftovers.

Owns ``{pool}/scratch/``. Downloads (``cache``) and disk clones (``disks``)
build their files there as ``{pool}/scratch/{stem}.{uuid}.tmp`` through
:meth:`ScratchArea.file`, which removes the file when the work ends, whatever
happens. The daemon calls :meth:`ScratchArea.sweep` (``ImageCache.sweep_scratch``)
at agent start and when a pool is first registered: whatever a killed agent
left is removed (a leftover is never an entry: only files under ``images/``
with a sidecar are reported).

The sweep removes everything in ``scratch/`` that no operation of this
process is using (tracked by the process's one :class:`ScratchArea`, which its
``ImageCache`` holds, so a sweep racing a live download cannot pull its file
away), plus stray ``fs.atomic_write`` temps
(``.B.sha256.tmp-<hex>``) in ``images/`` untouched for a minute. It never
sweeps inside another pool: an entry that is, holds or lies inside the root
of another pool declared on this node (the node's ``fs.ProtectedRoots``, a
required constructor argument the pool reconciler fills; rows that overlap
from before the one-directory-one-pool rule) is skipped with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from otherix.agent import fs
from otherix.agent.images.entries import IMAGES_DIR, TMP_SUFFIX

__all__ = ["SCRATCH_DIR", "ScratchArea"]

SCRATCH_DIR: Final = "scratch"
_ATOMIC_TMP_RE: Final = re.compile(r"\..+\.tmp-[0-9a-f]{16}")
_ATOMIC_TMP_AGE: Final = 60.0
_MAX_STEM_BYTES: Final = 200

_log = logging.getLogger(__name__)


class ScratchArea:
    """The scratch files this process is writing: one per agent process (its
    ``ImageCache`` holds it), shared by the downloads, the disk clones and the
    sweep, so the sweep never removes a file in use. ``protected`` is the
    node's declared pool roots, which the sweep never removes from under."""

    def __init__(self, protected: fs.ProtectedRoots) -> None:
        self.protected = protected
        self._lock = threading.Lock()
        #: realpaths of scratch files some operation of this process is writing.
        self._active: set[str] = set()

    @contextlib.contextmanager
    def file(self, pool_root: Path, stem: str) -> Iterator[Path]:
        """A fresh scratch path ``{pool}/scratch/{stem}.{uuid}.tmp``, removed on exit if
        still there.

        The file is not created (the caller creates it, exclusively); while the
        block runs, :meth:`sweep` leaves it alone.
        """
        scratch = pool_root / SCRATCH_DIR
        # Leave room for ".<32 hex>.tmp" within the 255-byte name limit.
        short = os.fsencode(stem)[:_MAX_STEM_BYTES].decode("utf-8", "ignore")
        path = fs.safe_join(scratch, f"{short}.{uuid.uuid4().hex}{TMP_SUFFIX}")
        key = os.path.join(os.path.realpath(scratch), path.name)
        with self._lock:
            self._active.add(key)
        try:
            yield path
        finally:
            try:
                fs.remove_file(path)
            finally:
                with self._lock:
                    self._active.discard(key)

    def busy(self, key: str) -> bool:
        with self._lock:
            return key in self._active

    def sweep(self, pool_root: Path) -> list[str]:
        """Remove leftovers of interrupted downloads and clones; returns the names removed.

        Everything in ``scratch/`` not in use by this process goes (files and
        directories; symlinks are unlinked, never followed), and atomic-write
        temps in ``images/`` untouched for a minute. Idempotent; a missing
        directory is fine. A ``scratch/`` that resolves outside the pool is left
        alone (the pool reconciler reports such a pool as failed).
        """
        removed: list[str] = []
        scratch = pool_root / SCRATCH_DIR
        try:
            fs.ensure_within(pool_root, scratch)
            names = sorted(os.listdir(scratch))
        except (OSError, fs.UnsafePath) as exc:
            if not isinstance(exc, FileNotFoundError | NotADirectoryError):
                _log.warning(
                    "scratch sweep skipped", extra={"pool": str(pool_root), "error": str(exc)}
                )
            names = []
        scratch_real = os.path.realpath(scratch)
        for name in names:
            if self.busy(os.path.join(scratch_real, name)):
                continue
            try:
                if fs.remove_tree(scratch, scratch / name, protected=self.protected):
                    removed.append(f"{SCRATCH_DIR}/{name}")
            except fs.UnsafePath as exc:  # another pool's root: never swept
                _log.warning(
                    "scratch entry kept", extra={"pool": str(pool_root), "error": str(exc)}
                )
        removed.extend(_sweep_atomic_temps(pool_root, self.protected))
        return removed


def _sweep_atomic_temps(pool_root: Path, protected: fs.ProtectedRoots) -> list[str]:
    """Stray ``fs.atomic_write`` temps in ``images/`` untouched for a minute."""
    removed: list[str] = []
    images = pool_root / IMAGES_DIR
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        cutoff = time.time() - _ATOMIC_TMP_AGE
        for name in sorted(os.listdir(images)):
            if not _ATOMIC_TMP_RE.fullmatch(name) or protected.held_by(
                os.path.join(os.path.realpath(images), name), os.path.realpath(images)
            ):
                continue
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(images / name).st_mtime < cutoff and fs.remove_file(images / name):
                    removed.append(f"{IMAGES_DIR}/{name}")
    return removed

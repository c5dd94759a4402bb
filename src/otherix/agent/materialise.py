"""Materialising one declared pool on this node: ``ensure_pool``.

Called by the pool reconciler (``otherix.agent.pools``) for every declared
pool that does not overlap an earlier one. Every write goes through
``otherix.agent.fs`` (the marker through ``otherix.agent.marker``); what to do
about the root and its marker is decided by ``otherix.agent.poolplan``.

``ensure_pool`` rules, in order; the first failure becomes the report's
``reconciliation_error`` (and ``reconciliation_reason``) and the pool is
``failed``:

1. name required; type ``local_dir``; root required and absolute; no NUL and
   no ``..`` segment in the root (``pool_invalid``: the control plane's own
   path syntax, checked again here because the agent acts on it as root).
2. No existing ancestor of the root may be a symlink, and the root itself must
   not be a symlink out of the pool (``pool_path_unsafe``).
3. Identity (``poolplan.decide_identity``, on what ``marker.observe`` saw):
   a known pool needs its directory (``pool_missing``), its marker, of this
   pool, cluster and incarnation (``pool_identity_mismatch``), on the same
   device (``pool_device_changed``). On any of these, nothing at all is
   created: no mkdir, no probe, no subdirectory, no sweep. A new pool gets
   its root (``mkdir -p``, mode 0750, check 2 again) and its marker
   (``.otherix-pool.json``, 0600, fsynced with its directory).
4. The root is opened and held open until the pass ends: its device must be
   the one just checked (a disk swapped in between fails the pass), and a
   plain ``umount`` of it fails busy while the agent writes.
5. A write probe (``.otherix-write-probe``, 0600, O_EXCL, one byte, fsync,
   unlink) proves the root is writable (``pool_unusable`` otherwise).
6. ``images/``, ``scratch/`` and ``vms/`` at 0750; each must not be a symlink
   whose target lies outside the root's realpath (checked before and after
   the mkdir, so a chmod never lands outside the pool).
7. statvfs of the root gives capacity and available bytes.
8. Every declared VM disk (``{pool}/vms/{vm-id}/disk.*``) must be a regular
   file inside the pool; the ids of those that are not are reported in
   ``missing_disks`` (a warning is logged once per disk when it goes missing,
   an info line when it is back). The pool stays ``ready``.

Why a symlinked ancestor is refused (rather than followed): the control plane
validates pool paths against an operator allowlist by string prefix, e.g.
``/var/lib/otherix/pools/``. If ``/var/lib/otherix/pools`` (or any component
above the pool) were a symlink, a pool inside the allowlist would really live
wherever the link points, and the agent, running as root, would create
directories and files there. Refusing is cheap and the error names the
component. Operators who want pools on another disk mount it (or bind-mount
it) at the allowlisted path, or declare the real path.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from otherix.agent import fs, marker
from otherix.agent.poolplan import Expect, Proceed, Reason, Refuse, decide_identity
from otherix.agent.pooltypes import DeclaredDisk, DeclaredPool, PoolReport

__all__ = ["POOL_SUBDIRS", "POOL_TYPE_LOCAL_DIR", "ensure_pool", "missing_disks", "path_refused"]

POOL_SUBDIRS: Final = ("images", "scratch", "vms")
POOL_TYPE_LOCAL_DIR: Final = "local_dir"
_DIR_MODE: Final = 0o750


class _PoolError(Exception):
    """Internal: one rule of ``ensure_pool`` failed; the message is the report's error."""

    def __init__(self, message: str, reason: Reason) -> None:
        super().__init__(message)
        self.reason: Reason = reason


def _validate(p: DeclaredPool) -> None:
    def bad(message: str) -> _PoolError:
        return _PoolError(message, "pool_invalid")

    if not p.name:
        raise bad("pool: name is required")
    q = f'pool "{p.name}"'
    if p.type != POOL_TYPE_LOCAL_DIR:
        raise bad(f'{q}: unsupported type "{p.type}"')
    if not p.path:
        raise bad(f"{q}: root is required")
    if not p.path.startswith("/"):
        raise bad(f'{q}: root must be absolute (got "{p.path}")')
    if "\x00" in p.path:
        raise bad(f"{q}: root must not contain NUL")
    if ".." in p.path.split("/"):
        raise bad(f'{q}: root must not contain a ".." segment (got "{p.path}")')
    if p.id and not (p.cluster_id and p.marker_id):
        raise bad(f"{q}: the declared pool has an id but no cluster_id or marker_id")


def _check_root(p: DeclaredPool, root: Path) -> None:
    """No symlinked ancestor, and the root itself is not a symlink leaving the pool."""
    ancestor = fs.first_symlinked_ancestor(root)
    if ancestor is not None:
        raise _PoolError(
            f'pool "{p.name}": {p.path} traverses a symlink ({ancestor})', "pool_path_unsafe"
        )
    # With real ancestors, the root's realpath must be the root itself.
    expected = os.path.join(os.path.realpath(root.parent), root.name)
    if os.path.realpath(root) != os.path.normpath(expected):
        raise _PoolError(
            f'pool "{p.name}": {p.path} is a symlink that escapes the pool', "pool_path_unsafe"
        )


def _check_subdir(p: DeclaredPool, root_real: Path, target: Path) -> None:
    try:
        fs.ensure_within(root_real, target)
    except fs.UnsafePath:
        raise _PoolError(
            f'pool "{p.name}": {target} is a symlink that escapes the pool', "pool_path_unsafe"
        ) from None


def path_refused(p: DeclaredPool) -> bool:
    """Rules 1 and 2 refuse the pool on its own (checked before overlaps: more specific)."""
    try:
        _validate(p)
        _check_root(p, Path(p.path))
    except _PoolError:
        return True
    return False


def _make_dir(prefix: str, path: Path, shown: str) -> None:
    try:
        fs.make_dir(path, _DIR_MODE)
    except OSError as exc:
        raise _PoolError(f"{prefix}: mkdir {shown}: {fs.strerror(exc)}", "pool_unusable") from exc


def _expect(p: DeclaredPool) -> Expect:
    mode = "legacy" if not p.id else p.identity
    return Expect(mode, p.name, p.path, p.id, p.cluster_id, p.marker_id)  # type: ignore[arg-type]


def _identity(p: DeclaredPool, root: Path, remembered: str | None) -> tuple[Proceed, int | None]:
    """Decide on what is at ``root``; returns the decision and the device checked."""
    try:
        seen = marker.observe(root)
    except OSError as exc:
        raise _PoolError(
            f'pool "{p.name}": cannot examine {p.path}: {fs.strerror(exc)}', "pool_unusable"
        ) from exc
    decision = decide_identity(_expect(p), seen, remembered=remembered)
    if isinstance(decision, Refuse):
        raise _PoolError(decision.message, decision.reason)
    return decision, seen.device.st_dev if seen.device is not None else None


@contextlib.contextmanager
def _held(p: DeclaredPool, root: Path, st_dev: int | None) -> Iterator[None]:
    """Hold the root open (rule 4): same device as checked, and not unmountable meanwhile."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise _PoolError(
            f'pool "{p.name}": open {p.path}: {fs.strerror(exc)}', "pool_unusable"
        ) from exc
    try:
        if st_dev is not None and os.fstat(fd).st_dev != st_dev:
            raise _PoolError(
                f'pool "{p.name}": the filesystem at {p.path} changed while it was checked '
                "(mounted or unmounted); nothing was created, checked again on the next pass",
                "pool_identity_mismatch",
            )
        yield
    finally:
        os.close(fd)


def _write_marker(p: DeclaredPool, root: Path) -> None:
    try:
        marker.write(
            root,
            pool_id=p.id,
            pool_name=p.name,
            cluster_id=p.cluster_id,
            marker_id=p.marker_id,
            path=p.path,
        )
    except OSError as exc:
        raise _PoolError(
            f'pool "{p.name}": writing the identity marker in {p.path}: {fs.strerror(exc)}',
            "pool_unusable",
        ) from exc


def _materialise(p: DeclaredPool, remembered: str | None) -> fs.Usage:
    _validate(p)
    q = f'pool "{p.name}"'
    root = Path(p.path)
    _check_root(p, root)
    decision, st_dev = _identity(p, root, remembered)
    if decision.create_root:
        _make_dir(f"{q} root", root, p.path)
        _check_root(p, root)
    with _held(p, root, st_dev):
        if decision.write_marker:
            _write_marker(p, root)
        try:
            fs.write_probe(root)
        except OSError as exc:
            raise _PoolError(
                f"{q}: write probe in {p.path}: {fs.strerror(exc)}", "pool_unusable"
            ) from exc
        root_real = Path(os.path.realpath(root))
        for sub in POOL_SUBDIRS:
            target = fs.safe_join(root, sub)
            _check_subdir(p, root_real, target)
            _make_dir(f"{q} {sub}", target, str(target))
            _check_subdir(p, root_real, target)
        try:
            return fs.disk_usage(root)
        except OSError as exc:
            raise _PoolError(f"{q}: statfs {p.path}: {fs.strerror(exc)}", "pool_unusable") from exc


def _disk_present(root: Path, disk: DeclaredDisk) -> bool:
    """The disk is a regular file inside the pool (never follows a symlinked disk)."""
    path = Path(disk.path)
    if not disk.path.startswith("/") or not os.path.normpath(disk.path).startswith(
        os.path.normpath(root) + "/"
    ):
        return False
    try:
        fs.ensure_within(root, path)
        return stat.S_ISREG(os.lstat(path).st_mode)
    except (OSError, fs.UnsafePath):
        return False


def missing_disks(p: DeclaredPool) -> tuple[str, ...]:
    """Ids of the pool's declared disks that are not there, sorted."""
    root = Path(p.path)
    return tuple(sorted(d.id for d in p.disks if not d.incoming and not _disk_present(root, d)))


def ensure_pool(p: DeclaredPool, *, remembered: str | None = None) -> PoolReport:
    """Apply one declared pool on disk (idempotent) and report ``ready`` or ``failed``.

    ``remembered``: the marker id this process already wrote or verified for
    the pool (``poolplan.decide_identity``).
    """
    try:
        usage = _materialise(p, remembered)
    except _PoolError as exc:
        return PoolReport.failed(p.name, str(exc), exc.reason)
    if not p.id:  # legacy: no marker, and an older control plane sends no disks
        return PoolReport.ready(p.name, usage)
    return PoolReport.ready(p.name, usage, p.marker_id, missing_disks(p))

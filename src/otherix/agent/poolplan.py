"""Pure rules of pool identity and of "one directory, one pool" on a node (no I/O).

Called by the pool reconciler (``otherix.agent.pools``), which observes the
disk (``otherix.agent.marker``) and applies what these functions decide;
table-tested in ``tests/agent/test_agent_poolplan.py``.

Identity (``decide_identity``). The control plane says per pool which
``identity`` mode applies (``otherix.models.heartbeat``):

- ``create``: the pool was never materialised with a marker (a new pool, or
  one an admin reinitialised). A missing root is created; a root without a
  marker gets one; a marker of this same pool and cluster with another
  ``marker_id`` (an earlier incarnation: the pool was reinitialised) is
  replaced. A foreign or unreadable marker is never overwritten.
- ``adopt``: the pool was ready before markers existed (migration
  ``0007`` (pool identity)). Its directory must exist and hold the pool layout
  (``images/``, ``scratch/``, ``vms/``); it then gets its marker, once. An
  empty mount point (unmounted disk) is refused, not adopted.
- ``verify``: the control plane has recorded the marker. The root and the
  marker must be there, of this pool, cluster and incarnation, on the same
  device; otherwise the pool fails and nothing at all is created.
- ``legacy`` (no pool id: a control plane from before markers): as before,
  no marker; the reconciler logs that the pool is unprotected.

A ``create`` or ``adopt`` pool whose marker this agent already wrote or
verified (``remembered`` is its ``marker_id``; the reconciler keeps that in
``{data_dir}/pools.json`` across restarts) is treated as
``verify``: the control plane's record may lag one heartbeat behind, and a
disk unmounted in that window must not get a second marker.

Device rule (``same_device``): the marker records the root's ``st_dev`` and
statvfs ``f_fsid``. When both the marker and the filesystem now report a
non-zero ``f_fsid``, it alone decides; ``st_dev`` decides only when one of
them has none. ``st_dev`` is the block device number, which can change
across reboots (loop, NVMe, device-mapper renumbering), and another
filesystem can land on the number a marker recorded (a copy attached where
the original was); ext4, btrfs, ZFS and NFS derive ``f_fsid`` from the
filesystem's own id, so a renumbered disk is recognised and a copy is not.
XFS derives ``f_fsid`` from the device number: a renumbered XFS disk reports
``pool_device_changed``. A changed filesystem with the marker on it means a
copy (a restored backup, an old snapshot) is mounted there.

Overlap (``later_overlaps``): pools are ranked by ``created_at``, then id,
then declared order; a pool whose real root equals, contains or lies inside
the real root of an earlier pool, or is the same directory (same device and
inode, e.g. a bind mount), fails ``pool_path_overlap`` naming the earliest
such pool. Earlier pools are compared whatever their own status, so the
outcome of a pool never flips when an unrelated pool changes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from otherix.domain.paths import paths_overlap

__all__ = [
    "LAYOUT",
    "MARKER_NAME",
    "Device",
    "Expect",
    "Marker",
    "Proceed",
    "Reason",
    "Refuse",
    "Root",
    "Seen",
    "Unreadable",
    "decide_identity",
    "later_overlaps",
    "same_device",
]

#: The identity marker's file name in the pool root.
MARKER_NAME: Final = ".otherix-pool.json"
#: Subdirectories every materialised pool has (the reconciler creates them).
LAYOUT: Final = ("images", "scratch", "vms")

Reason = Literal[
    "pool_missing",
    "pool_identity_mismatch",
    "pool_device_changed",
    "pool_path_overlap",
    "pool_invalid",
    "pool_path_unsafe",
    "pool_unusable",
    "path_not_allowed",
]
Mode = Literal["create", "adopt", "verify", "legacy"]


@dataclass(frozen=True)
class Device:
    """The filesystem a pool root lives on: ``st_dev`` and statvfs ``f_fsid``."""

    st_dev: int
    fsid: int

    def label(self) -> str:
        return f"{os.major(self.st_dev)}:{os.minor(self.st_dev)} (fsid {self.fsid:x})"


@dataclass(frozen=True)
class Marker:
    """What an identity marker says (``otherix.agent.marker`` reads and writes it)."""

    pool_id: str
    pool_name: str
    cluster_id: str
    marker_id: str
    created_at: str
    path: str
    device: Device


@dataclass(frozen=True)
class Unreadable:
    """A marker file is there but cannot be read as one (the message says why)."""

    message: str


@dataclass(frozen=True)
class Expect:
    """What the control plane declared for the pool."""

    mode: Mode
    name: str
    path: str
    pool_id: str
    cluster_id: str
    marker_id: str


@dataclass(frozen=True)
class Seen:
    """What the reconciler observed at the root (nothing written yet)."""

    root: Literal["missing", "dir", "other"]
    marker: Marker | Unreadable | None = None
    device: Device | None = None
    layout: bool = False  # every LAYOUT subdirectory is a real directory


@dataclass(frozen=True)
class Proceed:
    create_root: bool
    write_marker: bool


@dataclass(frozen=True)
class Refuse:
    reason: Reason
    message: str


def same_device(recorded: Device, current: Device) -> bool:
    """The rule in the module docstring: the fsid when both have one, else ``st_dev``."""
    if recorded.fsid != 0 and current.fsid != 0:
        return recorded.fsid == current.fsid
    return recorded.st_dev == current.st_dev


def _q(e: Expect) -> str:
    return f'pool "{e.name}"'


def _file(e: Expect) -> str:
    return os.path.join(e.path, MARKER_NAME)


def _foreign(e: Expect, m: Marker) -> Refuse | None:
    if m.cluster_id != e.cluster_id:
        return Refuse(
            "pool_identity_mismatch",
            f'{_q(e)}: {e.path} holds the marker of pool "{m.pool_name}" ({m.pool_id}) of '
            f"another cluster ({m.cluster_id}, this is {e.cluster_id}); it is never adopted "
            "or overwritten, and nothing was created",
        )
    if m.pool_id != e.pool_id:
        return Refuse(
            "pool_identity_mismatch",
            f'{_q(e)}: {e.path} holds the marker of another pool, "{m.pool_name}" '
            f"({m.pool_id}); it is never adopted or overwritten, and nothing was created",
        )
    return None


def _device(e: Expect, m: Marker, current: Device | None) -> Refuse | None:
    if current is None or same_device(m.device, current):
        return None
    return Refuse(
        "pool_device_changed",
        f"{_q(e)}: {e.path} is on device {current.label()}, but its marker was written on "
        f"{m.device.label()} ({m.created_at}): another filesystem holds a copy of this pool "
        "(a restored backup or an old snapshot?); nothing was created",
    )


def _unreadable(e: Expect, u: Unreadable) -> Refuse:
    return Refuse(
        "pool_identity_mismatch",
        f"{_q(e)}: marker {_file(e)} cannot be read ({u.message}); it is never overwritten, "
        "and nothing was created",
    )


def _verify(e: Expect, seen: Seen) -> Proceed | Refuse:
    if seen.root == "missing":
        return Refuse(
            "pool_missing",
            f"{_q(e)}: {e.path} does not exist; the pool was materialised before, so it is "
            "not re-created (is its disk mounted? 'otherix pool reinit' starts afresh)",
        )
    if seen.root == "other":
        return Refuse("pool_missing", f"{_q(e)}: {e.path} is not a directory; nothing was created")
    m = seen.marker
    if m is None:
        return Refuse(
            "pool_identity_mismatch",
            f"{_q(e)}: marker missing: is the disk mounted? ({_file(e)} not found; the pool "
            "was materialised before, so nothing was created)",
        )
    if isinstance(m, Unreadable):
        return _unreadable(e, m)
    if (refused := _foreign(e, m)) is not None:
        return refused
    if m.marker_id != e.marker_id:
        return Refuse(
            "pool_identity_mismatch",
            f"{_q(e)}: {e.path} holds an earlier marker of this pool ({m.marker_id}, "
            f"{m.created_at}); the pool was reinitialised since, so this is not its current "
            "directory; nothing was created",
        )
    return _device(e, m, seen.device) or Proceed(create_root=False, write_marker=False)


def _create(e: Expect, seen: Seen) -> Proceed | Refuse:
    if seen.root == "missing":
        return Proceed(create_root=True, write_marker=True)
    if seen.root == "other":
        return Refuse("pool_unusable", f"{_q(e)}: {e.path} is not a directory")
    m = seen.marker
    if m is None:
        return Proceed(create_root=False, write_marker=True)
    if isinstance(m, Unreadable):
        return _unreadable(e, m)
    if (refused := _foreign(e, m)) is not None:
        return refused
    if m.marker_id != e.marker_id:  # an earlier incarnation of this pool: reinitialised
        return Proceed(create_root=False, write_marker=True)
    return _device(e, m, seen.device) or Proceed(create_root=False, write_marker=False)


def _adopt(e: Expect, seen: Seen) -> Proceed | Refuse:
    if seen.root != "dir":
        return Refuse(
            "pool_missing",
            f"{_q(e)}: {e.path} does not exist or is not a directory; the pool was ready "
            "before identity markers, so it is not re-created (is its disk mounted?)",
        )
    m = seen.marker
    if m is None:
        if seen.layout:
            return Proceed(create_root=False, write_marker=True)
        return Refuse(
            "pool_identity_mismatch",
            f"{_q(e)}: marker missing and {e.path} holds no pool (no images/, scratch/, "
            "vms/): is the disk mounted? The pool was ready before identity markers, so an "
            "empty directory is not adopted; nothing was created",
        )
    if isinstance(m, Unreadable):
        return _unreadable(e, m)
    if (refused := _foreign(e, m)) is not None:
        return refused
    if m.marker_id != e.marker_id:
        return Refuse(
            "pool_identity_mismatch",
            f"{_q(e)}: {e.path} holds another marker of this pool ({m.marker_id}) than the "
            f"control plane knows ({e.marker_id}); nothing was created",
        )
    return _device(e, m, seen.device) or Proceed(create_root=False, write_marker=False)


def decide_identity(e: Expect, seen: Seen, *, remembered: str | None = None) -> Proceed | Refuse:
    """What to do about the pool's root and marker (module docstring)."""
    if e.mode == "legacy":  # as before markers: mkdir -p, whatever is there
        return Proceed(create_root=True, write_marker=False)
    mode = e.mode
    if mode != "verify" and remembered is not None and remembered == e.marker_id:
        mode = "verify"
    if mode == "verify":
        return _verify(e, seen)
    if mode == "adopt":
        return _adopt(e, seen)
    return _create(e, seen)


# --- one directory, one pool -----------------------------------------------------------


@dataclass(frozen=True)
class Root:
    """One declared pool root, as the reconciler resolved it on this host."""

    key: str  # lower(name)
    name: str
    pool_id: str
    created_at: datetime | None
    order: int  # position in the declared list
    realpath: str
    inode: tuple[int, int] | None = None  # (st_dev, st_ino) when the root exists


def _rank(r: Root) -> tuple[int, float, str, int]:
    if r.created_at is None:
        return (1, 0.0, r.pool_id, r.order)
    return (0, r.created_at.timestamp(), r.pool_id, r.order)


def _overlap(a: Root, b: Root) -> bool:
    same_dir = a.inode is not None and a.inode == b.inode
    return same_dir or paths_overlap(a.realpath, b.realpath)


def later_overlaps(roots: Sequence[Root]) -> dict[str, Root]:
    """``key -> earlier pool`` for every pool whose root overlaps an earlier one."""
    ranked = sorted(roots, key=_rank)
    out: dict[str, Root] = {}
    for i, root in enumerate(ranked):
        for earlier in ranked[:i]:
            if earlier.key != root.key and _overlap(root, earlier):
                out[root.key] = earlier
                break
    return out

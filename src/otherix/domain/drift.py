"""Drift between what a pool holds and what the control plane declares (pure; issue 16).

Owns the rules that turn a listing of a pool's ``vms/``, ``images/`` and ``scratch/``
(made by ``otherix.agent.drift``, which does the I/O) into drift items, and the rule
``purge_plan`` that a purge re-checks what the operator saw against. No I/O here.

Paths are relative to the pool root, ``/``-separated (``vms/<id>/disk.qcow2``).

- ``vms/``: a VM directory ``vms/<id>/`` is *owned* when the control plane declares a
  disk in it (``Owned.paths``), a disk is coming into it (``incoming``), or a VM task
  in the node's desired state names that VM (``Owned.vm_ids``: a create, delete or
  import under way). Nothing in an owned directory is reported. In a directory nobody
  owns, each ``disk.qcow2``/``disk.raw`` is an *orphan* disk (``vm import`` may adopt
  it); a directory with no disk file is one orphan (the directory); anything else in a
  directory that has a disk is an orphan of its own. An entry of ``vms/`` that is not a
  directory is an orphan.
- ``images/``: the files of a present cache entry ``B`` (``B``, ``B.sha256``,
  ``B.source``) are the cache's; anything else (a sidecar without its image, an image
  without its sidecar, a directory, a symlink) is *stray* once older than the grace
  period. The cache keeps no lock files on disk (its single-flight locks live in the
  agent's memory) and downloads are written in ``scratch/``; the only in-progress
  files in ``images/`` are the atomic-write temps of a sidecar or ``.source``, which
  the grace period covers.
- ``scratch/``: an entry is *stray* when no task of the agent is writing it (``busy``)
  and it is older than the grace period (``GRACE_SECONDS``, 1 hour: a download or clone
  that runs longer keeps its file busy, and the sweep at agent start removes what a
  killed agent left, so a stray scratch file is one the agent could not remove).

Missing disks (a declared disk whose file is not there) are reported apart, as
``PoolReport.missing_disks``; the control plane joins them to their VMs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "DISK_NAMES",
    "GRACE_SECONDS",
    "MAX_ITEMS",
    "Area",
    "EntryType",
    "Item",
    "Kind",
    "Owned",
    "Seen",
    "bounded",
    "image_items",
    "purge_plan",
    "scratch_items",
    "vm_items",
]

Kind = Literal["orphan", "stray"]
Area = Literal["vms", "images", "scratch"]
EntryType = Literal["file", "dir", "symlink", "other"]

#: the names a VM disk has in ``vms/<id>/``
DISK_NAMES: Final = ("disk.qcow2", "disk.raw")
#: seconds an entry of ``images/`` or ``scratch/`` must be untouched to count as stray
GRACE_SECONDS: Final = 3600.0
#: at most this many items travel in a report; the rest are counted (``more``)
MAX_ITEMS: Final = 100

_SIDE_SUFFIXES: Final = (".sha256", ".source")


@dataclass(frozen=True, slots=True)
class Seen:
    """One entry as the agent's listing found it (never followed if a symlink)."""

    path: str
    type: EntryType
    size_bytes: int
    mtime: float
    #: a scratch entry a task of this agent is writing now
    busy: bool = False


@dataclass(frozen=True, slots=True)
class Owned:
    """What the declared state owns in a pool."""

    #: relative paths of the declared disks (incoming ones included)
    paths: frozenset[str] = frozenset()
    #: VM ids whose ``vms/<id>/`` is owned (declared disks, incoming, VM tasks under way)
    vm_ids: frozenset[str] = frozenset()

    def owns_dir(self, vm_dir: str) -> bool:
        return vm_dir.lower() in self.vm_ids or any(
            p.startswith(f"vms/{vm_dir}/") for p in self.paths
        )


@dataclass(frozen=True, slots=True)
class Item:
    """One drift item: what it is, where, how big, when last modified."""

    kind: Kind
    area: Area
    path: str
    type: EntryType
    size_bytes: int
    mtime: float

    @property
    def disk_format(self) -> str | None:
        """``qcow2``/``raw`` for an orphan disk file (``vm import`` may adopt it)."""
        name = self.path.rsplit("/", 1)[-1]
        if self.area == "vms" and self.type == "file" and name in DISK_NAMES:
            return name.split(".", 1)[1]
        return None


def _parts(path: str) -> list[str]:
    return path.split("/")


def vm_items(seen: Iterable[Seen], owned: Owned) -> list[Item]:
    """The orphans of ``vms/`` (module docstring); ``seen`` lists ``vms/<x>`` entries and
    the children ``vms/<x>/<y>`` of those that are directories."""
    tops: dict[str, Seen] = {}
    children: dict[str, list[Seen]] = {}
    for s in seen:
        parts = _parts(s.path)
        if len(parts) == 2:
            tops[parts[1]] = s
        elif len(parts) == 3:
            children.setdefault(parts[1], []).append(s)
    out: list[Item] = []
    for name, top in sorted(tops.items()):
        if top.path in owned.paths:
            continue
        if top.type != "dir":
            out.append(Item("orphan", "vms", top.path, top.type, top.size_bytes, top.mtime))
            continue
        if owned.owns_dir(name):
            continue
        kids = sorted(children.get(name, []), key=lambda s: s.path)
        if not any(k.type == "file" and _parts(k.path)[2] in DISK_NAMES for k in kids):
            size = sum(k.size_bytes for k in kids)
            mtime = max([top.mtime, *(k.mtime for k in kids)])
            out.append(Item("orphan", "vms", top.path, "dir", size, mtime))
            continue
        out.extend(Item("orphan", "vms", k.path, k.type, k.size_bytes, k.mtime) for k in kids)
    return out


def _entry_files(present: Iterable[str]) -> set[str]:
    return {f"{b}{suffix}" for b in present for suffix in ("", *_SIDE_SUFFIXES)}


def image_items(seen: Iterable[Seen], present: Iterable[str], *, now: float) -> list[Item]:
    """The strays of ``images/``: not a file of a present entry (``present``: their
    basenames) and older than the grace period."""
    ours = _entry_files(present)
    out: list[Item] = []
    for s in sorted(seen, key=lambda s: s.path):
        name = s.path.split("/", 1)[1]
        if (s.type == "file" and name in ours) or now - s.mtime < GRACE_SECONDS:
            continue
        out.append(Item("stray", "images", s.path, s.type, s.size_bytes, s.mtime))
    return out


def scratch_items(seen: Iterable[Seen], *, now: float) -> list[Item]:
    """The strays of ``scratch/``: not busy and older than the grace period."""
    return [
        Item("stray", "scratch", s.path, s.type, s.size_bytes, s.mtime)
        for s in sorted(seen, key=lambda s: s.path)
        if not s.busy and now - s.mtime >= GRACE_SECONDS
    ]


def bounded(items: Sequence[Item], limit: int = MAX_ITEMS) -> tuple[list[Item], int]:
    """The first ``limit`` items by path, and how many more there were."""
    ordered = sorted(items, key=lambda i: i.path)
    return ordered[:limit], max(0, len(ordered) - limit)


def purge_plan(
    asked: Iterable[str], current: Iterable[Item], owned: Owned
) -> tuple[list[Item], dict[str, str]]:
    """What a purge of the paths ``asked`` removes, judged on the drift found NOW
    (``current``): the items among them, and for every other path why it stays
    (``owned``: the declared state owns it now; ``not_drift``: it is no longer an
    orphan or stray, e.g. gone or too young)."""
    by_path = {i.path: i for i in current}
    go: list[Item] = []
    kept: dict[str, str] = {}
    for path in dict.fromkeys(asked):
        item = by_path.get(path)
        if item is not None:
            go.append(item)
            continue
        parts = _parts(path)
        claimed = path in owned.paths or (
            len(parts) >= 2 and parts[0] == "vms" and owned.owns_dir(parts[1])
        )
        kept[path] = "owned" if claimed else "not_drift"
    return go, kept

"""One directory, one pool: how two pool paths on one node relate (pure, no I/O).

Owns the rule of issue 12 item 1 as the control plane applies it: on one node,
a pool path that is equal to, inside, or contains another pool's path is
refused (``pool_path_overlap``), and rows that overlap from before the rule
get a ``path_overlap`` condition on both pools in the views. Paths are stored
as typed (docs/pool-contract.md §8.2) and compared cleaned (:func:`clean_path`),
boundary-safe (``/p/a`` and ``/p/ab`` do not overlap).

Called by: ``api/services/pools.py`` (the create check, the views'
conditions) and ``domain/defaultpool.py`` (never provision over a held
path). The agent applies the same rule to realpaths on its own side.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from otherix.domain.paths import clean_path

__all__ = [
    "OverlapHit",
    "PoolPath",
    "Relation",
    "condition_message",
    "first_overlap",
    "overlaps_by_pool",
    "path_relation",
    "refusal_message",
]

#: How ``path`` relates to ``other``: the same directory, inside it, or containing it.
Relation = Literal["same", "inside", "contains"]


@dataclass(frozen=True, slots=True)
class PoolPath:
    """The parts of a pool instance the rule needs."""

    id: str
    name: str
    path: str


@dataclass(frozen=True, slots=True)
class OverlapHit:
    """``other`` overlaps the pool in question; ``relation`` is seen from that pool."""

    other: PoolPath
    relation: Relation


def _ancestors(cleaned: str) -> list[str]:
    """``/a/b`` -> ``["/a", "/"]`` (strict ancestors, nearest first)."""
    out: list[str] = []
    current = cleaned
    while current != "/":
        current = current.rsplit("/", 1)[0] or "/"
        out.append(current)
    return out


def path_relation(path: str, other: str) -> Relation | None:
    """How absolute ``path`` relates to absolute ``other``, compared cleaned.

    ``None`` when the two directories are disjoint. ``"inside"`` means
    ``path`` lies below ``other``; ``"contains"`` means ``other`` lies below
    ``path``.
    """
    a, b = clean_path(path), clean_path(other)
    if a == b:
        return "same"
    if b in _ancestors(a):
        return "inside"
    if a in _ancestors(b):
        return "contains"
    return None


def first_overlap(path: str, pools: Iterable[PoolPath]) -> OverlapHit | None:
    """The first of ``pools`` (in the caller's order) that ``path`` overlaps."""
    for pool in pools:
        relation = path_relation(path, pool.path)
        if relation is not None:
            return OverlapHit(pool, relation)
    return None


def overlaps_by_pool(pools: Sequence[PoolPath]) -> dict[str, list[OverlapHit]]:
    """For the pools of one node: pool id -> the other pools its path overlaps.

    Pools without an overlap are left out. Each pool's hits keep the order of
    ``pools``. Cost is one pass over each path's ancestors (``O(n * depth)``),
    not a comparison of every pair.
    """
    by_path: dict[str, list[int]] = {}
    cleaned = [clean_path(p.path) for p in pools]
    for index, c in enumerate(cleaned):
        by_path.setdefault(c, []).append(index)
    hits: dict[int, dict[int, Relation]] = {}
    for index, c in enumerate(cleaned):
        for other in by_path[c]:
            if other != index:
                hits.setdefault(index, {})[other] = "same"
        for ancestor in _ancestors(c):
            for other in by_path.get(ancestor, ()):
                hits.setdefault(index, {})[other] = "inside"
                hits.setdefault(other, {})[index] = "contains"
    return {
        pools[i].id: [OverlapHit(pools[o], rel) for o, rel in sorted(found.items())]
        for i, found in hits.items()
    }


_RELATION_TEXT: dict[Relation, str] = {
    "same": "is the same directory as",
    "inside": "is inside",
    "contains": "contains",
}


def refusal_message(path: str, hit: OverlapHit, node: str) -> str:
    """What a refused create says (409 ``conflict``, reason ``pool_path_overlap``)."""
    other = hit.other
    return (
        f'path "{path}" {_RELATION_TEXT[hit.relation]} the directory of storage pool '
        f'"{other.name}" ({other.id}, path "{other.path}") on node {node}; one directory '
        "can hold only one pool: choose a path outside every other pool on the node"
    )


def condition_message(hit: OverlapHit) -> str:
    """What a ``path_overlap`` condition says on a pool that overlaps from before the rule."""
    other = hit.other
    return (
        f"this pool's directory {_RELATION_TEXT[hit.relation]} the directory of storage "
        f'pool "{other.name}" ({other.id}, path "{other.path}") on the same node; two pools '
        "sharing a directory can delete each other's files: move the VM disks off one of "
        "them and delete it"
    )

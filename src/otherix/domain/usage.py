"""A pool's capacity in parts (issue 16), pure.

Owns how the parts the agent measures (``vm_disk_bytes``,
``vm_provisioned_bytes``, ``image_cache_bytes``, ``scratch_bytes``) combine
with the filesystem's ``capacity_bytes``/``available_bytes`` into what the
pool views show: ``other_bytes`` (used on the filesystem by something that is
not ours: other files, the root reserve, filesystem metadata) and
``overcommit_ratio`` (what the VM disks may grow to, over the capacity), and
how instances sum on the name view. Called by the pool views
(``api/services/pools.py``).

- ``other = capacity - available - (vm_disk + cache + scratch)``, floored
  at 0 (the agent measures the parts a moment after the statfs; a part that
  grew in between must not make ``other`` negative);
- ``overcommit = provisioned / capacity``, 4 decimals; null when the
  capacity is unknown or 0;
- on the name view every number is the sum over the instances that have
  it, and the ratio is the summed provisioned over the summed capacity of
  the instances that reported a usage. Two pools on one filesystem count it
  twice: pools do not know they share one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["PARTS", "Parts", "UsageView", "sum_views", "view"]

#: The agent-measured keys, in the order views print them.
PARTS = ("vm_disk_bytes", "vm_provisioned_bytes", "image_cache_bytes", "scratch_bytes")


@dataclass(frozen=True, slots=True)
class Parts:
    vm_disk_bytes: int
    vm_provisioned_bytes: int
    image_cache_bytes: int
    scratch_bytes: int

    @classmethod
    def from_mapping(cls, raw: Mapping[str, object] | None) -> Parts | None:
        """The parts of a stored report; None when absent or not four integers."""
        if not raw:
            return None
        values: list[int] = []
        for key in PARTS:
            v = raw.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                return None
            values.append(v)
        return cls(*values)

    @property
    def ours(self) -> int:
        return self.vm_disk_bytes + self.image_cache_bytes + self.scratch_bytes


@dataclass(frozen=True, slots=True)
class UsageView:
    parts: Parts
    other_bytes: int | None
    overcommit_ratio: float | None
    #: the capacity the ratio was taken of (summing needs it)
    capacity_bytes: int | None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {k: getattr(self.parts, k) for k in PARTS}
        out["other_bytes"] = self.other_bytes
        out["overcommit_ratio"] = self.overcommit_ratio
        return out


def _ratio(provisioned: int, capacity: int | None) -> float | None:
    if not capacity:
        return None
    return round(provisioned / capacity, 4)


def view(parts: Parts | None, capacity: int | None, available: int | None) -> UsageView | None:
    """The instance view's ``usage``; None when nothing was measured."""
    if parts is None:
        return None
    other = None
    if capacity is not None and available is not None:
        other = max(0, capacity - available - parts.ours)
    return UsageView(parts, other, _ratio(parts.vm_provisioned_bytes, capacity), capacity)


def _sum(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def sum_views(views: Iterable[UsageView | None]) -> UsageView | None:
    """The name view's ``usage``: the instances' summed (None when none has one)."""
    have = [v for v in views if v is not None]
    if not have:
        return None
    parts = Parts(*(sum(getattr(v.parts, k) for v in have) for k in PARTS))
    capacity = _sum(v.capacity_bytes for v in have)
    other = _sum(v.other_bytes for v in have)
    return UsageView(parts, other, _ratio(parts.vm_provisioned_bytes, capacity), capacity)

"""Placement of a VM's root disk on a pool instance (docs/pool-contract.md §7.2), pure.

Owns: the ``Candidate`` (a pool instance as placement sees it), the ``Ask``
(what a VM asks for), ``Unplaceable`` (the reason, message and details a VM
that cannot be placed records), ``decide`` and ``effective_bytes`` (free bytes
less what placed disks already committed). Called by the API's placement
service (``api/services/placement.py``: load candidates, decide, bind), VM
admission and the scheduler worker; the pool views show ``effective_bytes``.

The decision, given what a VM asks for and the pool instances its ``pool``
names:

- eligible: the node is ready, not cordoned, of the VM's architecture; the
  pool instance is not cordoned (``otherix pool cordon``), is reconciled
  ``ready`` and has no disk pressure;
- no instance at all: ``pool_not_found``; instances but none eligible:
  ``pool_cordoned`` when every one is cordoned, ``node_pressure`` when one was
  excluded only for disk pressure, else ``no_eligible_nodes``
  (``details.candidates`` says why each was excluded);
- a node hint keeps only that node's instance, else ``pool_not_on_node``;
- room: with ``disk_gib`` > 0, ``available_bytes_effective`` must hold
  ``disk_gib`` x 2^30 (an instance that never reported capacity is kept,
  ranked last), else ``insufficient_resources``;
- tie-break: most effective free bytes, then lower-case node name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["GIB", "Ask", "Candidate", "Unplaceable", "decide", "effective_bytes"]

GIB = 1 << 30


def effective_bytes(available: int | None, committed_gib: int | None) -> int | None:
    """Free bytes placement can still use: ``available`` less the GiB placed disks
    committed, never below 0; ``None`` while the pool never reported capacity."""
    if available is None:
        return None
    return max(0, available - int(committed_gib or 0) * GIB)


@dataclass(frozen=True)
class Candidate:
    pool_id: str
    pool_name: str
    pool_path: str
    node_id: str
    node: str
    node_status: str  # projected: ready, cordoned, pending, unreachable, gone
    architecture: str | None
    reconciliation_status: str
    pressure_since: str | None
    effective_bytes: int | None
    cordoned: bool = False  # the pool instance itself (otherix pool cordon)


@dataclass(frozen=True)
class Ask:
    pool: str
    node: str | None
    disk_gib: int
    arch: str | None


@dataclass(frozen=True)
class Unplaceable:
    reason: str
    message: str
    details: dict[str, Any]


def _excluded(c: Candidate, arch: str | None) -> str | None:
    """Why an instance is not eligible (``disk_pressure`` is checked last)."""
    if c.node_status != "ready":
        return f"node_{c.node_status}"
    if c.cordoned:
        return "pool_cordoned"
    if arch is not None and c.architecture is not None and c.architecture != arch:
        return "architecture_mismatch"
    if c.reconciliation_status != "ready":
        return f"pool_{c.reconciliation_status}"
    if c.pressure_since is not None:
        return "disk_pressure"
    return None


def _rank(c: Candidate) -> tuple[int, int, str, str]:
    known = c.effective_bytes is not None
    return (0 if known else 1, -(c.effective_bytes or 0), c.node.lower(), c.pool_id)


def decide(ask: Ask, candidates: list[Candidate]) -> Candidate | Unplaceable:
    """The chosen instance, or why none is (see the module docstring)."""
    if not candidates:
        return Unplaceable(
            "pool_not_found", f'pool "{ask.pool}" not found in cluster', {"pool": ask.pool}
        )
    why = {c.pool_id: _excluded(c, ask.arch) for c in candidates}
    eligible = [c for c in candidates if why[c.pool_id] is None]
    if not eligible:
        if all(why[c.pool_id] == "pool_cordoned" for c in candidates):
            return Unplaceable(
                "pool_cordoned",
                f'pool "{ask.pool}" is cordoned on every node it lives on',
                {"pool": ask.pool, "nodes": sorted(c.node for c in candidates)},
            )
        pressured = [c for c in candidates if why[c.pool_id] == "disk_pressure"]
        if pressured:
            return Unplaceable(
                "node_pressure",
                "all candidate nodes under pressure",
                {
                    "reason": "node_pressure",
                    "filtered_due_to_pressure": [
                        {
                            "node": c.node,
                            "pool": c.pool_name,
                            "conditions": ["disk_pressure"],
                            "disk_pressure_since": c.pressure_since,
                        }
                        for c in pressured
                    ],
                },
            )
        return Unplaceable(
            "no_eligible_nodes",
            "no eligible node available",
            {
                "pool": ask.pool,
                "candidates": [
                    {"node": c.node, "pool_id": c.pool_id, "excluded": why[c.pool_id]}
                    for c in candidates
                ],
            },
        )
    if ask.node is not None:
        hint = ask.node.lower()
        eligible = [c for c in eligible if c.node.lower() == hint]
        if not eligible:
            there = [c for c in candidates if c.node.lower() == hint]
            details: dict[str, Any] = {"pool": ask.pool, "node": ask.node}
            message = f'pool "{ask.pool}" not present on node "{ask.node}"'
            if there:
                details["excluded"] = why[there[0].pool_id]
                message = f'pool "{ask.pool}" on node "{ask.node}" is not eligible'
                message += f" ({details['excluded']})"
            return Unplaceable("pool_not_on_node", message, details)
    if ask.disk_gib > 0:
        need = ask.disk_gib * GIB
        fits = [c for c in eligible if c.effective_bytes is None or c.effective_bytes >= need]
        if not fits:
            return Unplaceable(
                "insufficient_resources",
                "no node has sufficient resources",
                {
                    "required_disk_bytes": need,
                    "candidates": [
                        {
                            "node": c.node,
                            "pool_id": c.pool_id,
                            "available_bytes_effective": c.effective_bytes,
                        }
                        for c in eligible
                    ],
                },
            )
        eligible = fits
    return min(eligible, key=_rank)

"""The default-pool rules: what to provision on a node, and the last-instance rule.

Provisioning uses ``storage_pools.default_pool_name`` (config) and the first
allowed prefix: :func:`plan` says what the configured name asks for before
looking at a node (off, an invalid name, or go ahead at
``<first allowed prefix><name>``), and :func:`obstacle` what on the node
stops it (a pool of that name already there, or a pool whose path overlaps,
``domain.overlap``). The cluster default pool's last instance cannot be
deleted (:func:`removes_last_default`, :func:`last_default_message`).

Called by: ``api/services/defaultpool.py`` (the provisioning step, its
events), ``api/services/pools.py`` (pool delete) and
``api/services/nodes.py`` (node delete). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from otherix.domain.names import validate_pool_name
from otherix.domain.overlap import OverlapHit, PoolPath, first_overlap
from otherix.domain.paths import default_pool_path, pool_path_allowed

__all__ = [
    "Plan",
    "PlanOutcome",
    "last_default_message",
    "obstacle",
    "plan",
    "removes_last_default",
]

#: A plan that stops before the node: provisioning is off, or the name is unusable.
PlanOutcome = Literal["disabled", "invalid_name"]


@dataclass(frozen=True, slots=True)
class Plan:
    """What the configured name asks for, before looking at the node."""

    outcome: PlanOutcome | None  # None: go ahead at ``path``
    message: str
    name: str | None = None
    path: str | None = None


def plan(name: str, prefixes: Sequence[str]) -> Plan:
    """The plan for configured ``name`` under the allowed ``prefixes`` (first one used).

    An empty name opts out (``disabled``); a name that is not a valid pool
    name, escapes the prefix or lands on an allowed prefix itself is
    ``invalid_name``.
    """
    if not name:
        return Plan(
            "disabled",
            "default pool provisioning is off (storage_pools.default_pool_name is empty)",
        )
    if problem := validate_pool_name(name):  # the same rule an API create applies
        return Plan(
            "invalid_name",
            f"storage_pools.default_pool_name {name!r} is not a valid pool name ({problem}); "
            "nothing provisioned",
            name,
        )
    path = default_pool_path(prefixes[0], name)
    if path is None or not pool_path_allowed(path, prefixes):
        return Plan(
            "invalid_name",
            f"storage_pools.default_pool_name {name!r} under prefix {prefixes[0]!r} does not "
            "give a path below an allowed prefix; nothing provisioned",
            name,
        )
    return Plan(None, "", name, path)


def obstacle(name: str, path: str, existing: Sequence[PoolPath]) -> PoolPath | OverlapHit | None:
    """What on the node stops provisioning ``name`` at ``path``, or ``None``.

    A pool of the same name (compared case-insensitively) comes first and is
    returned as is; then the first pool whose path overlaps, as an
    :class:`OverlapHit`.
    """
    same = next((p for p in existing if p.name.lower() == name.lower()), None)
    if same is not None:
        return same
    return first_overlap(path, existing)


def removes_last_default(default_name: str, removed: Iterable[str], kept: Iterable[str]) -> bool:
    """Whether removing pools named ``removed`` leaves no instance of the cluster default.

    ``kept``: the names of the default's other instances that stay. Names
    compare case-insensitively. (With no default set, nothing blocks: callers
    skip the check.)
    """
    wanted = default_name.lower()
    if not any(n.lower() == wanted for n in removed):
        return False
    return not any(n.lower() == wanted for n in kept)


def last_default_message(name: str) -> str:
    """Why a delete that would leave the cluster default dangling is refused."""
    return (
        f'storage pool "{name}" is the cluster default and this is its last instance; '
        f"set another default first ('otherix cluster set-default-pool NAME') or unset it "
        f"('otherix cluster unset-default-pool'), then delete it"
    )

"""The pool reconciler's values: declared pools and disks in, pool reports out.

Owns ``DeclaredPool`` (one entry of the heartbeat reply's ``declared_pools``,
with paths as this host sees them), ``DeclaredDisk``, ``RegisteredPool`` and
``PoolReport`` (one entry of the heartbeat's ``pools[]``). Built by
``otherix.agent.report`` from the wire models and consumed by
``otherix.agent.pools``; re-exported there, where callers import them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal, Self

from otherix.agent import fs

__all__ = [
    "DeclaredDisk",
    "DeclaredPool",
    "PoolReport",
    "PoolUnknownError",
    "ReconciliationStatus",
    "RegisteredPool",
]

ReconciliationStatus = Literal["ready", "failed"]
IDENTITY_MODES = ("create", "adopt", "verify")


class PoolUnknownError(LookupError):
    """The pool is not (or no longer) registered on this node."""


def _wire_str(d: Mapping[str, Any], key: str) -> str:
    value = d.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"declared pool: {key} must be a string, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class DeclaredDisk:
    """A VM disk the pool must hold: ``path`` as this host sees it."""

    id: str
    vm_id: str
    path: str
    #: a move is bringing the disk into this pool (``vm move``): it may or may not be
    #: here yet, so it is never missing (and never an orphan)
    incoming: bool = False


def _created_at(d: Mapping[str, Any]) -> datetime | None:
    value = d.get("created_at")
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError("declared pool: created_at must be a string")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"declared pool: created_at {value!r} is not a timestamp") from exc


def _disks(d: Mapping[str, Any]) -> tuple[DeclaredDisk, ...]:
    raw = d.get("disks") or []
    if not isinstance(raw, list):
        raise ValueError("declared pool: disks must be a list")
    out: list[DeclaredDisk] = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise ValueError("declared pool: each disk must be an object")
        disk = (_wire_str(item, "id"), _wire_str(item, "vm_id"), _wire_str(item, "file_path"))
        out.append(DeclaredDisk(*disk, incoming=item.get("incoming") is True))
    return tuple(out)


@dataclass(frozen=True)
class DeclaredPool:
    """What this node must have. Without ``id`` (an older control plane) no marker is kept."""

    name: str
    type: str
    path: str
    config: Mapping[str, object] = field(default_factory=dict, hash=False)
    id: str = ""
    cluster_id: str = ""
    created_at: datetime | None = None
    identity: str = "create"  # create | adopt | verify (otherix.agent.poolplan)
    marker_id: str = ""
    disks: tuple[DeclaredDisk, ...] = ()

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from the JSON object; missing strings become "" and fail in ``ensure_pool``."""
        config = d.get("config")
        if config is None:
            config = {}
        if not isinstance(config, Mapping):
            raise ValueError(
                f"declared pool: config must be an object, got {type(config).__name__}"
            )
        identity = _wire_str(d, "identity") or "create"
        if identity not in IDENTITY_MODES:
            raise ValueError(f"declared pool: unknown identity mode {identity!r}")
        return cls(
            name=_wire_str(d, "name"),
            type=_wire_str(d, "type"),
            path=_wire_str(d, "path"),
            config=MappingProxyType(dict(config)),
            id=_wire_str(d, "id"),
            cluster_id=_wire_str(d, "cluster_id"),
            created_at=_created_at(d),
            identity=identity,
            marker_id=_wire_str(d, "marker_id"),
            disks=_disks(d),
        )


@dataclass(frozen=True)
class RegisteredPool:
    """A pool this agent knows about: canonical name and root path as declared."""

    name: str
    path: str


@dataclass(frozen=True)
class PoolReport:
    """Observed state of one pool, as sent in the heartbeat's ``pools[]``."""

    name: str
    reconciliation_status: ReconciliationStatus
    reconciliation_error: str | None
    capacity_bytes: int | None
    available_bytes: int | None
    #: machine-readable failure reason (otherix.agent.poolplan.Reason); None when ready
    reconciliation_reason: str | None = None
    #: the identity marker the pool has (None: failed, or kept without one)
    marker_id: str | None = None
    #: ids of declared disks not found (None: not checked, the pool failed)
    missing_disks: tuple[str, ...] | None = None

    @classmethod
    def ready(
        cls,
        name: str,
        usage: fs.Usage,
        marker_id: str | None = None,
        missing_disks: tuple[str, ...] | None = None,
    ) -> Self:
        return cls(
            name,
            "ready",
            None,
            usage.capacity_bytes,
            usage.available_bytes,
            None,
            marker_id,
            missing_disks,
        )

    @classmethod
    def failed(cls, name: str, error: str, reason: str = "pool_unusable") -> Self:
        return cls(name, "failed", error, None, None, reason)

    def to_wire(self) -> dict[str, object]:
        """The ``HeartbeatPoolReport`` JSON object."""
        return {
            "name": self.name,
            "reconciliation_status": self.reconciliation_status,
            "reconciliation_error": self.reconciliation_error,
            "reconciliation_reason": self.reconciliation_reason,
            "capacity_bytes": self.capacity_bytes,
            "available_bytes": self.available_bytes,
            "marker_id": self.marker_id,
            "missing_disks": None if self.missing_disks is None else list(self.missing_disks),
        }

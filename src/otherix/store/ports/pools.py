"""The pools aggregate: ``storage_pools`` (desired) with ``pool_status``
(observed), the VM disks on them, and the narrow shapes the rules need."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypedDict

from otherix.store.ports import JSONObject, JSONValue
from otherix.store.tx import Tx


@dataclass(frozen=True, slots=True)
class PoolRow:
    """A pool instance with its observed status, its node and its disk counts:
    everything a pool view needs, in one query."""

    id: str
    node_id: str
    name: str
    name_lower: str
    type: str
    path: str
    config: JSONObject
    created_at: datetime
    updated_at: datetime
    #: placement skips a cordoned instance (``otherix pool cordon``)
    cordoned: bool
    #: GiB of VM disks created on the pool after its last capacity report
    committed_gib: int
    vm_disks_total: int
    #: disks whose file the agent reports missing, or every made disk while failed
    vm_disks_missing: int
    reconciliation_status: str
    reconciliation_error: str | None
    reconciliation_reason: str | None
    identity_mode: str
    marker_id: str | None
    last_reconciled_at: datetime | None
    capacity_bytes: int | None
    available_bytes: int | None
    reported_at: datetime | None
    pressure_since: datetime | None
    pressure_count: int
    images: list[JSONValue]
    #: the agent's last ``usage`` report (``models.heartbeat.PoolUsage``), or None
    usage: JSONObject | None
    #: the agent's last cache scrub report (``models.heartbeat.PoolScrubReport``), or None
    scrub: JSONObject | None
    node_name: str
    node_liveness: str
    node_cordoned: bool
    node_deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewPool:
    """A pool to insert: it starts ``pending``, identity ``create``, a fresh marker."""

    id: str
    node_id: str
    name: str
    type: str
    path: str
    config: JSONObject
    created_at: datetime


class PoolChange(TypedDict, total=False):
    """The user-writable columns an update may set."""

    name: str
    name_lower: str
    config: JSONObject
    cordoned: bool
    updated_at: datetime


class PoolStatusChange(TypedDict, total=False):
    """The observed columns an agent report (or a scan) may set."""

    reconciliation_status: str
    reconciliation_error: str | None
    reconciliation_reason: str | None
    identity_mode: str
    last_reconciled_at: datetime | None
    capacity_bytes: int | None
    available_bytes: int | None
    reported_at: datetime | None
    pressure_since: datetime | None
    pressure_count: int
    images: list[JSONValue]
    usage: JSONObject | None
    scrub: JSONObject | None
    #: 0012: the agent's last drift report (``models.heartbeat.PoolDriftReport``)
    drift: JSONObject | None


@dataclass(frozen=True, slots=True)
class PoolRef:
    """The narrow identity of a pool: what the path and name rules and the
    delete locks need."""

    id: str
    node_id: str
    name: str
    name_lower: str
    path: str


@dataclass(frozen=True, slots=True)
class DeclaredPoolRow:
    """A pool as a node's desired state declares it."""

    id: str
    name: str
    type: str
    path: str
    config: JSONObject
    created_at: datetime
    marker_id: str | None
    identity_mode: str


@dataclass(frozen=True, slots=True)
class DiskToCheck:
    """A made VM disk the agent must find on the node."""

    id: str
    vm_id: str
    file_path: str
    storage_pool_id: str
    #: the image the disk was made from (the agent keeps a running VM's image cached)
    image_sha256: str | None = None
    #: a move is copying the disk into this pool (``storage_pool_id`` is then the move's
    #: target and ``file_path`` where the disk will be): never missing, never an orphan
    incoming: bool = False


@dataclass(frozen=True, slots=True)
class PoolStatusRow:
    """A pool's observed status, keyed for matching agent reports by name."""

    pool_id: str
    name_lower: str
    reconciliation_status: str
    reconciliation_error: str | None
    reconciliation_reason: str | None
    identity_mode: str
    marker_id: str | None
    last_reconciled_at: datetime | None
    capacity_bytes: int | None
    available_bytes: int | None
    reported_at: datetime | None
    pressure_since: datetime | None
    pressure_count: int
    images: list[JSONValue]
    usage: JSONObject | None
    #: the agent's last cache scrub report (0011), or None
    scrub: JSONObject | None = None
    #: the agent's last drift report (0012), or None
    drift: JSONObject | None = None


# --- drift (0012, issue 16) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolDiskRow:
    """A VM disk on a pool instance with its VM, for ``pool doctor`` (drift)."""

    id: str
    vm_id: str
    vm_name: str
    vm_phase: str
    file_path: str | None
    missing_since: datetime | None


# --- end drift ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolGaugeRow:
    """One pool instance on a live node, as ``/metrics`` shows it (issue 16)."""

    pool_name: str
    node_name: str
    capacity_bytes: int | None
    available_bytes: int | None
    under_pressure: bool
    usage: JSONObject | None


class PoolStore(Protocol):
    """Pool instances, their status and the disks on them."""

    def insert_pool(self, tx: Tx, pool: NewPool) -> None: ...
    def get_pool(self, tx: Tx, pool_id: str) -> PoolRow | None: ...
    def get_pools_by_name(self, tx: Tx, name: str) -> list[PoolRow]: ...
    def first_name_match(self, tx: Tx, name: str) -> str | None: ...
    def list_pools(
        self,
        tx: Tx,
        *,
        after: tuple[datetime, str] | None,
        limit: int,
        node_id: str | None = None,
        pool_type: str | None = None,
    ) -> list[PoolRow]: ...
    def update_pool(self, tx: Tx, pool_id: str, change: PoolChange) -> int: ...
    def count_disks(self, tx: Tx, pool_id: str) -> int: ...
    def delete_pool(self, tx: Tx, pool_id: str) -> int: ...
    def lock_pool(self, tx: Tx, pool_id: str) -> str | None: ...
    def declared_for_node(self, tx: Tx, node_id: str) -> list[DeclaredPoolRow]: ...
    def disks_to_check(self, tx: Tx, node_id: str) -> list[DiskToCheck]: ...
    def missing_disk_ids(self, tx: Tx, node_id: str) -> dict[str, set[str]]: ...
    def mark_disks_missing(
        self, tx: Tx, pool_id: str, disk_ids: Collection[str], since: datetime | None
    ) -> None: ...
    def status_for_node(self, tx: Tx, node_id: str) -> list[PoolStatusRow]: ...
    def update_status(self, tx: Tx, pool_id: str, change: PoolStatusChange) -> None: ...
    def paths_on_nodes(self, tx: Tx, node_ids: Sequence[str]) -> list[PoolRef]: ...
    def lock_for_delete(
        self, tx: Tx, *, node_id: str | None, names: Sequence[str]
    ) -> list[PoolRef]: ...
    def lock_instances(self, tx: Tx, name: str, also_id: str | None = None) -> list[PoolRef]: ...
    def count_disks_on_node(self, tx: Tx, node_id: str) -> int: ...
    def vm_names_on_node_pools(self, tx: Tx, node_id: str, limit: int = 20) -> list[str]: ...
    def delete_pools(self, tx: Tx, pool_ids: Sequence[str]) -> int: ...
    def reinit_identity(self, tx: Tx, pool_id: str, marker_id: str) -> None: ...
    def gauges(self, tx: Tx) -> list[PoolGaugeRow]: ...
    # drift (0012, issue 16)
    def drift_of(self, tx: Tx, pool_id: str) -> JSONObject | None: ...
    def disks_on_pool(self, tx: Tx, pool_id: str) -> list[PoolDiskRow]: ...
    def set_disk_format(self, tx: Tx, vm_id: str, fmt: str) -> None: ...

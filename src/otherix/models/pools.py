"""Wire models for storage pools and the cluster default pool (docs/pool-contract.md §4, §5)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, StrictStr

from otherix.models.common import Input, Output, Page

ReconciliationStatus = Literal["pending", "ready", "failed"]
NodeStatus = Literal["pending", "ready", "cordoned", "draining", "unreachable", "gone"]

#: Keys the agent reports; a create body carrying any of them is refused.
AGENT_REPORTED_FIELDS = ("available_bytes", "capacity_bytes", "is_default", "reported_at")
#: Keys a PATCH may never change.
IMMUTABLE_FIELDS = (
    "available_bytes",
    "capacity_bytes",
    "is_default",
    "node",
    "node_id",
    "path",
    "reported_at",
    "type",
)


class PoolCreate(Input):
    node: StrictStr
    name: StrictStr
    type: StrictStr = "local_dir"
    path: StrictStr
    config: dict[str, Any] = Field(default_factory=dict)


class PoolUpdate(Input):
    name: StrictStr | None = None
    config: dict[str, Any] | None = None


class CachedImage(Output):
    name: str
    sha256: str
    size_bytes: int
    virtual_size_bytes: int | None = None
    format: str
    imported_at: datetime


class DiskPressure(Output):
    since: datetime
    consecutive_count: int


class PoolRef(Output):
    """Another pool named by a condition or an error's details."""

    id: str
    name: str
    path: str


class PoolCondition(Output):
    """Something wrong with a pool that its status alone does not say.

    ``type`` is ``path_overlap`` (its directory overlaps ``other_pool``'s on the
    same node, a row from before the one-directory-one-pool rule),
    ``orphaned`` (its node was deleted while the pool held VM disks) or
    ``pool_filling`` (at its trend it is full in less than ``capacity.warn_days``).
    """

    type: str
    message: str
    other_pool: PoolRef | None = None


class VmDiskCounts(Output):
    """VM disks on a pool: ``missing`` are made disks whose file the agent reports
    gone, or every made disk while the pool is ``failed`` (see ``vm get``)."""

    total: int = 0
    missing: int = 0


class PoolUsage(Output):
    """A pool's capacity in parts (issue 16; ``otherix.domain.usage``), in bytes.

    ``vm_disk_bytes``, ``image_cache_bytes`` and ``scratch_bytes`` are what those
    files take on the filesystem (allocated); ``vm_provisioned_bytes`` what the VM
    disks may grow to (their virtual size); ``other_bytes`` what is used on the
    filesystem by anything else (capacity - available - the three, at least 0);
    ``overcommit_ratio`` is provisioned over capacity.
    """

    vm_disk_bytes: int
    vm_provisioned_bytes: int
    image_cache_bytes: int
    scratch_bytes: int
    other_bytes: int | None = None
    overcommit_ratio: float | None = None


class QuarantinedImageView(Output):
    """A cache entry the scrub found damaged and moved to the pool's ``quarantine/``."""

    image: str
    sha256_expected: str | None = None
    sha256_found: str | None = None
    quarantined_at: datetime
    path: str = Field(description="the quarantine directory, relative to the pool root")


class ScrubProgressView(Output):
    bytes_done: int
    bytes_total: int


class PoolScrubView(Output):
    """The instance's cache scrub as its agent last reported it (issue 16)."""

    last_completed_at: datetime | None = None
    bytes_per_second: float | None = None
    quarantined: list[QuarantinedImageView] = Field(default_factory=list)
    running: ScrubProgressView | None = None


# -- time to full (issue 16.6; ``otherix.domain.capacity``) ------------------------------


class CapacityTrendView(Output):
    """The trend of a pool instance's used bytes (filesystem capacity - available)
    over ``capacity.trend_window``, and when it fills at that rate."""

    state: Literal["filling", "not_filling", "unknown"] = Field(
        description="filling: used bytes grow; not_filling: flat or shrinking (never "
        "full); unknown: fewer than 3 samples over 2 intervals since the last drop"
    )
    samples: int = Field(description="samples fitted (those after the last drop)")
    bytes_per_day: float | None = Field(
        default=None, description="least-squares slope of used bytes; null when unknown"
    )
    available_bytes: int | None = None
    days_to_full: float | None = Field(
        default=None, description="available over the slope; null unless filling"
    )
    full_at: datetime | None = None


class PoolCapacitySample(Output):
    sampled_at: datetime = Field(description="the start of the sampling bucket")
    used_bytes: int = Field(description="filesystem capacity - available")
    capacity_bytes: int
    available_bytes: int
    vm_disk_bytes: int | None = None
    image_cache_bytes: int | None = None


class PoolCapacityHistory(Output):
    """``GET /v1/storage-pools/{id}/capacity-history``: one instance's samples,
    oldest first, from ``since`` (at most ``limit``), and its trend."""

    pool: str
    pool_id: str
    node: str
    sample_interval_seconds: float
    retention_seconds: float
    trend: CapacityTrendView | None = None
    samples: list[PoolCapacitySample]
    next_since: datetime | None = Field(
        default=None,
        description="set when samples were left off by limit: ask again with since= this",
    )


# -- end time to full ---------------------------------------------------------------------


class StoragePool(Output):
    model_config = ConfigDict(extra="ignore")

    id: str
    node: str
    node_status: NodeStatus | None
    name: str
    type: str
    path: str
    capacity_bytes: int | None = None
    available_bytes: int | None = None
    available_bytes_effective: int | None = None
    reported_at: datetime | None = None
    is_cluster_default: bool
    config: dict[str, Any]
    disk_pressure: DiskPressure | None = None
    reconciliation_status: ReconciliationStatus
    last_reconciled_at: datetime | None = None
    reconciliation_error: str | None = None
    reconciliation_reason: str | None = Field(
        default=None,
        description="why the pool failed, machine-readable (pool_missing, "
        "pool_identity_mismatch, pool_device_changed, pool_path_overlap, ...; "
        "docs/error-codes.md); null unless failed",
    )
    vm_disks: VmDiskCounts = Field(default_factory=VmDiskCounts)
    cordoned: bool = Field(
        default=False,
        description="placement skips a cordoned instance; a VM that names its pool is "
        "refused (pool_cordoned) when every instance is cordoned",
    )
    usage: PoolUsage | None = Field(
        default=None,
        description="what the pool's VM disks, image cache and scratch hold (issue 16); "
        "null until its agent measures it",
    )
    scrub: PoolScrubView | None = Field(
        default=None,
        description="the cache scrub: last completion, rate, quarantined entries, the one "
        "running now (issue 16); null until its agent reports one",
    )
    capacity_trend: CapacityTrendView | None = Field(
        default=None,
        description="the trend of used bytes and the time to full (issue 16.6); null on "
        "an orphaned pool",
    )
    images: list[CachedImage] = Field(default_factory=list)
    #: Empty for a healthy pool; see :class:`PoolCondition`.
    conditions: list[PoolCondition] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime


class PoolConceptView(Output):
    name: str
    type: str
    is_cluster_default: bool
    #: summed over the instances
    vm_disks: VmDiskCounts = Field(default_factory=VmDiskCounts)
    #: summed over the instances that reported them (null when none did)
    capacity_bytes: int | None = None
    available_bytes: int | None = None
    usage: PoolUsage | None = None
    instances: list[StoragePool]


PoolList = Page[StoragePool]


class DefaultPool(Output):
    name: str


class DefaultPoolSet(Input):
    name: StrictStr = Field(max_length=255)


class CacheEntryView(Output):
    """One image in a pool instance's cache (``GET /v1/storage-pools/{id}/cache``)."""

    name: str
    sha256: str
    size_bytes: int
    format: str | None = None
    imported_at: str | None = None
    last_used_at: str | None = Field(
        default=None, description="when the cache last handed it out (eviction goes by it)"
    )
    pinned: bool = False
    vms: list[str] = Field(default_factory=list, description="VMs whose disk was made from it")


class CachePolicyView(Output):
    max_bytes: int | None = None
    min_free_percent: float
    min_age_seconds: float
    pinned: list[str]


class PoolCacheView(Output):
    pool: str
    pool_id: str
    node: str
    policy: CachePolicyView
    images: list[CacheEntryView]

"""Wire models of drift (issue 16): ``pool doctor``, its purge, and ``vm import``.

``GET /v1/storage-pools/{id}/drift`` answers :class:`PoolDriftView`, built by
``otherix.api.services.drift`` from the agent's last drift report
(``models.heartbeat.PoolDriftReport``, stored in ``pool_status.drift``) and the pool's
missing VM disks. ``POST .../drift/purge`` takes :class:`DriftPurge`;
``POST /v1/vms/import`` takes :class:`VmImport`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, StrictInt, StrictStr

from otherix.models.common import Input, Output
from otherix.models.vms import Architecture

__all__ = ["DriftItemView", "DriftPurge", "PoolDriftView", "VmImport"]


class DriftItemView(Output):
    """One thing on the pool the control plane does not own, or owns but cannot find."""

    kind: Literal["orphan", "stray", "missing"] = Field(
        description="orphan: in vms/, no VM owns it; stray: in images/ or scratch/, not "
        "part of a cache entry or a running task; missing: a VM's disk the agent cannot find"
    )
    area: Literal["vms", "images", "scratch"]
    path: str = Field(description="relative to the pool root")
    type: Literal["file", "dir", "symlink", "other"] | None = None
    size_bytes: int | None = None
    modified_at: datetime | None = None
    age_seconds: int | None = Field(default=None, description="since modified_at")
    #: the VM whose disk is missing (kind missing)
    vm: str | None = None
    vm_id: str | None = None
    #: qcow2/raw for an orphan disk file that ``vm import`` can adopt
    importable: bool = False
    action: str = Field(description="what the operator can do about it")


class PoolDriftView(Output):
    pool: str
    pool_id: str
    node: str
    path: str
    reported: bool = Field(description="false until the pool's agent sent a drift report")
    items: list[DriftItemView] = Field(default_factory=list)
    more: int = Field(default=0, description="orphans and strays found but not listed")


class DriftPurge(Input):
    """The paths to remove (as ``pool doctor`` listed them); the agent checks each again."""

    paths: list[StrictStr] = Field(min_length=1, max_length=100)


class VmImport(Input):
    """``POST /v1/vms/import``: adopt an orphan disk of a pool as a new, stopped VM."""

    name: StrictStr
    pool: StrictStr = Field(description="a pool name (with node) or an instance UUID")
    node: StrictStr | None = None
    disk: StrictStr = Field(
        description="the orphan as pool doctor printed it (relative to the pool root), or "
        "its absolute path on the node"
    )
    vcpus: StrictInt = Field(default=1, ge=1, le=1024)
    memory_mb: StrictInt = Field(default=1024, ge=64, le=16 * 1024 * 1024)
    arch: Architecture | None = Field(default=None, description="default: the node's")

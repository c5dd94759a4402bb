"""Agent <-> control plane exchange: heartbeat report, declared state, watch.

A report carries only what changed since the last acknowledged one: ``pools``
is ``None`` when the agent's pool reports are unchanged, and ``digest`` is the
sha256 of the agent's full observed pool state. The control plane keeps the
digest of what it last stored; when a delta report's digest does not match,
the reply says ``resync: true`` and the agent sends everything next time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from otherix.models.common import Input, Output
from otherix.models.strictjson import INT64_MAX


class ImageReport(Input):
    name: str = Field(min_length=1, max_length=255)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0, le=INT64_MAX)
    virtual_size_bytes: int | None = Field(default=None, ge=0, le=INT64_MAX)
    format: Literal["qcow2", "raw"]
    imported_at: datetime


class PoolReport(Input):
    name: str = Field(min_length=1, max_length=255)  # the pool-name limit (contract 3.1)
    reconciliation_status: Literal["ready", "failed"]
    reconciliation_error: str | None = Field(default=None, max_length=4096)
    capacity_bytes: int | None = Field(default=None, ge=0, le=INT64_MAX)  # BIGINT columns
    available_bytes: int | None = Field(default=None, ge=0, le=INT64_MAX)
    images: list[ImageReport] | None = None


class Resources(Input):
    cpu_cores_total: int | None = Field(default=None, ge=0, le=1 << 16)
    memory_total_mib: int | None = Field(default=None, ge=0, le=INT64_MAX)
    memory_available_mib: int | None = Field(default=None, ge=0, le=INT64_MAX)
    system_disk_total_bytes: int | None = Field(default=None, ge=0, le=INT64_MAX)
    system_disk_available_bytes: int | None = Field(default=None, ge=0, le=INT64_MAX)


class HeartbeatReport(Input):
    agent_version: str = Field(min_length=1, max_length=64)
    architecture: Literal["amd64", "arm64"]
    revision: int = Field(ge=0, le=INT64_MAX, description="desired revision the agent has applied")
    capabilities: dict[str, Any] | None = None
    resources: Resources | None = None
    pools: list[PoolReport] | None = None
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")


class DeclaredPool(Output):
    name: str
    type: str
    path: str
    config: dict[str, Any] = Field(default_factory=dict)


class AgentTask(Output):
    """Work the control plane asks the node to do (today: ``storage_pool.scan``)."""

    id: str
    type: str
    args: dict[str, Any] = Field(default_factory=dict)


class DesiredState(Output):
    revision: int
    declared_pools: list[DeclaredPool]
    tasks: list[AgentTask] = Field(default_factory=list)


class TaskUpdate(Input):
    """The agent's report on a task it runs."""

    status: Literal["running", "success", "failed"]
    progress: int = Field(default=0, ge=0, le=100)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class HeartbeatReply(Output):
    received_at: datetime
    resync: bool
    heartbeat_interval_seconds: float
    desired: DesiredState


class WatchReply(Output):
    changed: bool
    desired: DesiredState

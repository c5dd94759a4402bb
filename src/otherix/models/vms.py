"""Wire models for VMs and their disks (docs/pool-contract.md §7).

Owns: ``VMCreate`` (the ``POST /v1/vms`` body), the ``VM`` read model with its
``VMStatus`` and ``VmDisk`` rows, and the phase and pull-policy vocabularies.
The VM rules (name and image URL syntax, ``disk_missing``) are in
``otherix.domain.names`` and ``otherix.domain.vms``; the placement decision
(docs/pool-contract.md §7.2) is ``otherix.domain.placement.decide``. Called by the API's VM
services and routes, and by clients that parse VM answers.

Phases (``status.phase``):

- ``pending``: admitted; not placed yet (``status.reason``/``message`` say
  why, see docs/pool-contract.md §7.2), or placed with its ``vm.create`` task not started.
- ``creating``: the node's agent is running the ``vm.create`` task (image
  cache fill, disk materialisation); progress is on the task.
- ``stopped``: the disk is ready. Whether QEMU runs is the power state, not
  the phase: ``status.state`` (below).
- ``moving``: a ``vm move`` is copying the disk to another pool (``vm.move``
  task); the VM cannot be started or deleted until it ends (``stopped`` again,
  on the new pool after a success, on the old one after a failure or cancel).
- ``error``: a task failed; ``status.reason`` is the task's error code (e.g.
  ``checksum_mismatch``, ``image_collision``, ``pool_full``,
  ``disk_too_small``, ``download_failed``).
- ``deleting``: a ``vm.delete`` task is removing the disk; when it succeeds
  the VM is gone (its row is removed).

A made disk (its ``file_path`` known) is *missing* (``disk_missing``, pure)
when its pool is reconciled ``failed`` (``pool_failed``: its directory,
marker or device is gone, docs/architecture.md "Pool identity") or the
agent reports the file gone (``file_missing``). The disk row says so
(``missing``, ``missing_reason``, ``missing_since``), and a ``stopped`` VM
whose root disk is missing shows ``status.reason: "disk_missing"`` with a
message and ``details``; its phase stays ``stopped`` (the lifecycle did not
change, and list filters by phase keep matching it).

Power (docs/vm-runtime.md): ``power_state`` is the desired power state
(``running`` unless the VM was created with ``power_state: stopped`` or
stopped since), ``restart_policy`` what the agent does when QEMU ends
unasked. ``status.state`` is what the node last observed of the VM's QEMU
(``starting``, ``running``, ``stopping``, ``stopped``, ``crashed``,
``failed``; ``stopped`` for a VM whose disk is ready and that never ran, null
before that), ``status.runtime`` the rest of that observation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, StrictInt, StrictStr

from otherix.domain.vms import MissingReason, PowerState, RestartPolicy, RunState
from otherix.models.common import Input, Output, Page

VmPhase = Literal["pending", "creating", "stopped", "moving", "error", "deleting"]
PullPolicy = Literal["if-not-present", "always"]
DiskFormat = Literal["qcow2", "raw"]
Architecture = Literal["amd64", "arm64"]

MAX_DISK_GIB = 65536


class VMCreate(Input):
    """``POST /v1/vms``. ``pool`` is a pool name or an instance UUID (default: the
    cluster default pool); ``node`` is a node-name hint (a UUID is refused)."""

    name: StrictStr
    image_url: StrictStr
    image_sha256: StrictStr | None = Field(
        default=None, description="expected sha256 of the image, 64 hex digits"
    )
    pull_policy: PullPolicy = "if-not-present"
    arch: Architecture
    vcpus: StrictInt = Field(ge=1, le=1024)
    memory_mb: StrictInt = Field(ge=64, le=16 * 1024 * 1024)
    format: DiskFormat = "qcow2"
    disk_gib: StrictInt = Field(
        default=0, ge=0, le=MAX_DISK_GIB, description="0: the image's virtual size"
    )
    pool: StrictStr | None = None
    node: StrictStr | None = None
    power_state: PowerState = Field(
        default="running",
        description="running: start the VM as soon as its disk is ready; stopped: leave it "
        "stopped (otherix vm create --no-start)",
    )
    restart_policy: RestartPolicy = Field(
        default="on-failure",
        description="when QEMU ends without being asked: always (restart, a guest power-off "
        "included), on-failure (restart after a crash, with backoff), never",
    )


class VmPowerRequest(Input):
    """The body of ``POST /v1/vms/{name}/{start|stop|restart|poweroff}`` (optional)."""

    timeout_seconds: StrictInt = Field(
        default=60,
        ge=1,
        le=3600,
        description="stop and restart: how long the guest gets to power down after the ACPI "
        "request before QEMU is powered off",
    )


class VmMoveRequest(Input):
    """The body of ``POST /v1/vms/{name}/move``: the pool to move the VM's disk to."""

    pool: str = Field(
        min_length=1,
        max_length=255,
        description="the target pool: a name (its instance on the VM's node, or on ``node``) "
        "or an instance UUID",
    )
    node: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="the target pool's node, when it is not the VM's (a move across nodes)",
    )


class VmRuntimeView(Output):
    """What the VM's node last observed of its QEMU."""

    pid: int | None = None
    accelerator: str | None = Field(default=None, description="kvm or tcg")
    started_at: datetime | None = None
    uptime_seconds: int | None = Field(default=None, description="while running")
    exit_status: int | None = Field(
        default=None, description="QEMU's exit status (negative: killed by that signal)"
    )
    detail: str | None = Field(
        default=None, description="crashed: the exit in words; failed: QEMU's own message"
    )
    restarts: int = Field(default=0, description="restarts by the restart policy")
    next_restart_at: datetime | None = None
    limits: str | None = Field(default=None, description="the cgroup limits QEMU runs under")
    console_tail: list[str] = Field(
        default_factory=list, description="crashed or failed: the last console lines"
    )
    observed_at: datetime | None = None


class VmConsole(Output):
    """``GET /v1/vms/{name}/console``: the last lines of the VM's serial console."""

    name: str
    state: RunState | None
    lines: list[str]
    observed_at: datetime | None = None


class VMStatus(Output):
    phase: VmPhase = Field(
        description="pending (not placed yet, or vm.create not started), creating (the agent "
        "runs vm.create), stopped (the disk is ready; whether QEMU runs is status.state), "
        "error (a task failed), deleting (vm.delete runs; the VM is gone when it succeeds)"
    )
    reason: str | None = Field(
        default=None,
        description="pending: the placement reason (pool_not_found, pool_cordoned, "
        "pool_not_on_node, no_eligible_nodes, node_pressure, insufficient_resources); "
        "error: the failed "
        "task's error code; stopped: disk_missing when the root disk's pool failed or its "
        "file is gone (null otherwise)",
    )
    message: str | None = None
    details: dict[str, Any] | None = None
    task_id: str | None = Field(
        default=None, description="the VM's latest task (vm.create, vm.start, ..., vm.delete)"
    )
    state: RunState | None = Field(
        default=None,
        description="what the node last observed of the VM's QEMU: starting, running, "
        "stopping, stopped, crashed (QEMU ended unasked), failed (QEMU did not start); "
        "null while the disk is not ready",
    )
    runtime: VmRuntimeView | None = None


class VmDisk(Output):
    id: str
    vm_id: str
    storage_pool_id: str
    pool: str
    device_order: int
    bus: str = "virtio"
    source_kind: str = "image"
    size_gib: int
    format: str
    file_path: str | None = Field(default=None, description="admin and operator only")
    virtual_size_bytes: int | None = None
    actual_size_bytes: int | None = None
    image_sha256: str | None = None
    missing: bool = Field(default=False, description="the disk's pool failed or its file is gone")
    missing_reason: MissingReason | None = None
    missing_since: datetime | None = Field(
        default=None, description="when the agent reported the file gone (file_missing)"
    )
    created_at: datetime
    updated_at: datetime


class VM(Output):
    """A VM. ``pool`` is the pool hosting the root disk once placed (before that,
    the requested pool); ``node`` is null until the VM is placed."""

    id: str
    name: str
    owner_id: str
    owner: str
    image_url: str | None
    image_sha256: str | None = None
    pull_policy: PullPolicy = "if-not-present"
    architecture: Architecture | None
    vcpus: int | None
    memory_mb: int | None
    format: DiskFormat = "qcow2"
    disk_gib: int = 0
    pool: str | None
    pool_id: str | None = None
    node: str | None = None
    node_hint: str | None = None
    power_state: PowerState = "running"
    restart_policy: RestartPolicy = "on-failure"
    status: VMStatus
    disks: list[VmDisk] | None = Field(default=None, description="GET by name only")
    created_at: datetime
    updated_at: datetime


VMList = Page[VM]

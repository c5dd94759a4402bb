"""Agent <-> control plane exchange: heartbeat report, declared state, watch.

A report carries only what changed since the last acknowledged one: ``pools``
is ``None`` when the agent's pool reports are unchanged, and ``digest`` is the
sha256 of the agent's full observed pool state. The control plane keeps the
digest of what it last stored; when a delta report's digest does not match,
the reply says ``resync: true`` and the agent sends everything next time.

Pool identity (docs/architecture.md, "Pool identity"): each declared pool
carries its instance ``id``, the ``cluster_id``, its ``created_at`` (the
agent's "later pool" rule for overlapping roots), the ``marker_id`` the
control plane chose for its identity marker and ``identity``: ``create``
(never materialised: create the root if needed and write the marker),
``adopt`` (materialised before markers existed: the existing directory gets
the marker, once) or ``verify`` (known: the marker must be there; nothing is
created otherwise). ``disks`` are the VM disks the agent must find in the
pool. A pool report says why a pool failed (``reconciliation_reason``),
which marker it found (``marker_id``) and which of the declared disks are
missing (``missing_disks``, disk ids; null when the pool was not checked).
A ready pool's report carries ``usage`` (issue 16: bytes of VM disks, their
provisioned size, the image cache and scratch; null when not measured, and
the control plane then keeps what it had).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from otherix.domain.vms import RunState
from otherix.models.common import Input, Output
from otherix.models.strictjson import INT64_MAX


class ImageReport(Input):
    name: str = Field(min_length=1, max_length=255)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0, le=INT64_MAX)
    virtual_size_bytes: int | None = Field(default=None, ge=0, le=INT64_MAX)
    format: Literal["qcow2", "raw"]
    imported_at: datetime
    #: the entry's last use (a VM's disk made from it, a verify); eviction goes by it
    last_used_at: datetime | None = None


class EvictionReport(Input):
    """A cache entry the agent evicted (``domain.cache``); the control plane makes each
    one a node event (``image_evicted``) once."""

    image: str = Field(min_length=1, max_length=255)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0, le=INT64_MAX)
    reason: Literal["max_bytes", "min_free", "prune"]
    last_used_at: datetime
    evicted_at: datetime


class QuarantinedImage(Input):
    """A cache entry the scrub found damaged, moved to the pool's ``quarantine/``."""

    image: str = Field(min_length=1, max_length=255)
    #: the sidecar's sha256; null when the sidecar is not in the quarantine directory
    sha256_expected: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    #: what the bytes hash to; null when unreadable or the move was cut short
    sha256_found: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    quarantined_at: datetime
    #: the quarantine directory, relative to the pool root
    path: str = Field(min_length=1, max_length=1024)


class ScrubProgress(Input):
    bytes_done: int = Field(ge=0, le=INT64_MAX)
    bytes_total: int = Field(ge=0, le=INT64_MAX)


class PoolScrubReport(Input):
    """The pool's cache scrub (``otherix.agent.scrubber``): when it last completed, at
    what rate, what sits in ``quarantine/``, and the one running now."""

    last_completed_at: datetime | None = None
    bytes_per_second: float | None = Field(default=None, ge=0)
    quarantined: list[QuarantinedImage] = Field(default_factory=list, max_length=1000)
    running: ScrubProgress | None = None


# --- drift (issue 16, deliverable 4: otherix.agent.drift, otherix pool doctor) ---------


class DriftItem(Input):
    """Something in a pool nobody owns: an ``orphan`` of ``vms/`` (no declared disk owns
    it) or a ``stray`` file of ``images/`` or ``scratch/`` (``otherix.domain.drift``)."""

    kind: Literal["orphan", "stray"]
    area: Literal["vms", "images", "scratch"]
    #: relative to the pool root, ``/``-separated
    path: str = Field(min_length=1, max_length=1024)
    type: Literal["file", "dir", "symlink", "other"]
    size_bytes: int = Field(ge=0, le=INT64_MAX)
    modified_at: datetime


class PoolDriftReport(Input):
    """The pool's drift as its agent last scanned it (at most 100 items, by path: a
    heartbeat stays small however much a pool holds)."""

    items: list[DriftItem] = Field(default_factory=list, max_length=100)
    #: items found beyond the list's limit, not listed
    more: int = Field(default=0, ge=0, le=INT64_MAX)


# --- end drift ---------------------------------------------------------------------------


class PoolUsage(Input):
    """What a pool's own directories hold (``otherix.agent.usage``), in bytes.

    ``*_bytes`` but ``vm_provisioned_bytes`` are allocated bytes (``st_blocks * 512``),
    what the files really take on the filesystem; ``vm_provisioned_bytes`` is the
    VM disks' virtual size, what they may grow to.
    """

    vm_disk_bytes: int = Field(ge=0, le=INT64_MAX)
    vm_provisioned_bytes: int = Field(ge=0, le=INT64_MAX)
    image_cache_bytes: int = Field(ge=0, le=INT64_MAX)
    scratch_bytes: int = Field(ge=0, le=INT64_MAX)


#: ``DeclaredPool.identity``: what the agent may do to find or make the pool's marker.
IdentityMode = Literal["create", "adopt", "verify"]
#: Machine-readable pool failure reasons (``reconciliation_reason``), docs/error-codes.md.
REASON_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"


class PoolReport(Input):
    name: str = Field(min_length=1, max_length=255)  # pool-name limit: docs/pool-contract.md §8.1
    reconciliation_status: Literal["ready", "failed"]
    reconciliation_error: str | None = Field(default=None, max_length=4096)
    reconciliation_reason: str | None = Field(default=None, pattern=REASON_PATTERN)
    capacity_bytes: int | None = Field(default=None, ge=0, le=INT64_MAX)  # BIGINT columns
    available_bytes: int | None = Field(default=None, ge=0, le=INT64_MAX)
    images: list[ImageReport] | None = None
    #: the identity marker found in (or written to) the pool root; null when failed
    marker_id: str | None = Field(default=None, max_length=64)
    #: ids of declared disks not found in the pool; null when the pool was not checked
    missing_disks: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None, max_length=100_000
    )
    #: the pool's latest cache evictions (at most 50, oldest first), until they age out
    evictions: list[EvictionReport] | None = Field(default=None, max_length=50)
    #: what the pool's directories hold; null when not measured (failed, or an older agent)
    usage: PoolUsage | None = None
    #: the pool's cache scrub; null when not reported (failed, or an older agent)
    scrub: PoolScrubReport | None = None
    #: what the pool holds that nobody owns (issue 16, drift); null when not scanned
    drift: PoolDriftReport | None = None


class Resources(Input):
    cpu_cores_total: int | None = Field(default=None, ge=0, le=1 << 16)
    memory_total_mib: int | None = Field(default=None, ge=0, le=INT64_MAX)
    memory_available_mib: int | None = Field(default=None, ge=0, le=INT64_MAX)
    system_disk_total_bytes: int | None = Field(default=None, ge=0, le=INT64_MAX)
    system_disk_available_bytes: int | None = Field(default=None, ge=0, le=INT64_MAX)


class VmObservation(Input):
    """What the agent observes of one VM's QEMU (docs/vm-runtime.md). ``console`` is the
    last lines of its serial console (at most 100, each cut at 1,024 characters)."""

    id: str = Field(min_length=1, max_length=64)
    state: RunState
    pid: int | None = Field(default=None, ge=1, le=1 << 31)
    accelerator: Literal["kvm", "tcg"] | None = None
    started_at: datetime | None = None
    exit_status: int | None = Field(default=None, ge=-255, le=255)
    detail: str | None = Field(default=None, max_length=4096)
    restarts: int = Field(default=0, ge=0, le=INT64_MAX)
    next_restart_at: datetime | None = None
    limits: str | None = Field(default=None, max_length=512)
    console: list[Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=list, max_length=100
    )


class HeartbeatReport(Input):
    agent_version: str = Field(min_length=1, max_length=64)
    architecture: Literal["amd64", "arm64"]
    revision: int = Field(ge=0, le=INT64_MAX, description="desired revision the agent has applied")
    capabilities: dict[str, Any] | None = None
    resources: Resources | None = None
    pools: list[PoolReport] | None = None
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    #: every VM the agent's runtime knows, as observed; None: unchanged since the last
    #: acknowledged report (or an agent without a VM runtime)
    vms: list[VmObservation] | None = Field(default=None, max_length=100_000)


class DeclaredDisk(Output):
    """A VM disk the agent must find in its pool (``file_path`` as the node names it)."""

    id: str
    vm_id: str
    file_path: str
    #: the image the disk was made from: a running VM's image is never evicted
    image_sha256: str | None = None
    #: a move of this VM's disk into this pool is under way: the disk may or may not be
    #: here yet, so it is neither missing nor an orphan (docs/pool-contract.md, moves)
    incoming: bool = False


class DeclaredPool(Output):
    name: str
    type: str
    path: str
    config: dict[str, Any] = Field(default_factory=dict)
    # Pool identity; the control plane always sends them. The defaults are what an
    # older control plane means, and the agent then writes no marker (legacy).
    id: str = ""
    cluster_id: str = ""
    created_at: datetime | None = None
    identity: IdentityMode = "create"
    marker_id: str = ""
    disks: list[DeclaredDisk] = Field(default_factory=list)


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
    """The agent's report on a task it runs.

    ``attempt`` / ``max_attempts``: the try the agent is on and how many it
    makes (``vm.create``: its ``tasks.vm_create_attempts``); the control plane
    stores them as the task's ``attempts`` / ``max_attempts``. Left out by
    older agents, in which case the control plane counts one attempt itself.
    """

    status: Literal["running", "success", "failed"]
    progress: int = Field(default=0, ge=0, le=100)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    attempt: int | None = Field(default=None, ge=1, le=100)
    max_attempts: int | None = Field(default=None, ge=1, le=100)


class HeartbeatReply(Output):
    received_at: datetime
    resync: bool
    heartbeat_interval_seconds: float
    desired: DesiredState


class WatchReply(Output):
    changed: bool
    desired: DesiredState

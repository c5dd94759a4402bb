"""The VMs aggregate: ``vms`` rows with their root disk's pool, their ``vm_disks``,
the queue of VMs waiting for placement, and the node architectures placement
needs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypedDict

from otherix.store.ports import JSONObject
from otherix.store.tx import Tx


@dataclass(frozen=True, slots=True)
class VmRecord:
    """The bare ``vms`` row: what a lock and the unscheduled queue read, and
    what placement binds."""

    id: str
    name: str
    name_lower: str
    owner_id: str
    #: the admitted ``VMCreate`` (less the name) with the requested ``pool``
    spec: JSONObject
    node_id: str | None
    phase: str
    reason: str | None
    message: str | None
    created_at: datetime
    updated_at: datetime
    #: the requested pool (name or instance id)
    pool_ref: str | None
    status_details: JSONObject | None
    task_id: str | None


@dataclass(frozen=True, slots=True)
class VmRow(VmRecord):
    """A VM with its owner's and node's names and its root disk's pool and
    state: everything a VM view needs, in one query."""

    owner: str
    node_name: str | None
    root_pool_id: str | None
    root_pool_name: str | None
    root_file_path: str | None
    root_missing_since: datetime | None
    root_pool_status: str | None
    root_pool_reason: str | None
    #: what the node last reported of the VM's QEMU (``vm_runtime``), or None: nothing yet
    runtime: JSONObject | None
    runtime_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewVm:
    """A VM to insert: it starts ``pending`` and unplaced."""

    id: str
    name: str
    owner_id: str
    spec: JSONObject
    pool_ref: str
    created_at: datetime


class VmChange(TypedDict, total=False):
    """The columns placement, the task outcomes and a delete may set."""

    spec: JSONObject
    node_id: str | None
    phase: str
    reason: str | None
    message: str | None
    status_details: JSONObject | None
    task_id: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class VmDiskRow:
    """A VM's disk with its pool's name, path and reconciliation status."""

    id: str
    vm_id: str
    storage_pool_id: str
    device_order: int
    size_gib: int
    format: str
    file_path: str | None
    created_at: datetime
    updated_at: datetime
    virtual_size_bytes: int | None
    actual_size_bytes: int | None
    image_sha256: str | None
    missing_since: datetime | None
    #: the pool instance a move is copying the disk into (0014), or None
    move_pool_id: str | None
    pool: str
    pool_path: str
    pool_status: str
    pool_reason: str | None


@dataclass(frozen=True, slots=True)
class NewVmDisk:
    """A disk to insert, not made yet (no ``file_path``)."""

    id: str
    vm_id: str
    storage_pool_id: str
    device_order: int
    size_gib: int
    format: str
    created_at: datetime


class RootDiskChange(TypedDict, total=False):
    """What the agent reported when it made the root disk (``vm.create`` result), and
    what a move sets (its target, then the switch to it)."""

    storage_pool_id: str
    move_pool_id: str | None
    missing_since: datetime | None
    file_path: str | None
    virtual_size_bytes: int | None
    actual_size_bytes: int | None
    image_sha256: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class VmRuntimeRow:
    """What a node last reported of one VM's QEMU (``models.heartbeat.VmObservation``)."""

    vm_id: str
    state: str
    observed: JSONObject
    observed_at: datetime


class VmStore(Protocol):
    """VMs, their disks and the placement queue."""

    def insert_vm(self, tx: Tx, vm: NewVm) -> VmRecord: ...
    def get_vm(self, tx: Tx, vm_id: str) -> VmRow | None: ...
    def get_vm_by_name(self, tx: Tx, name: str) -> VmRow | None: ...
    def lock_vm(self, tx: Tx, vm_id: str) -> VmRecord | None: ...
    def list_vms(
        self,
        tx: Tx,
        *,
        after: tuple[datetime, str] | None,
        limit: int,
        owner_id: str | None = None,
        node_id: str | None = None,
        phase: str | None = None,
        pool_id: str | None = None,
        pool_name: str | None = None,
    ) -> list[VmRow]: ...
    def unscheduled(self, tx: Tx, limit: int) -> list[VmRecord]: ...
    def update_vm(
        self,
        tx: Tx,
        vm_id: str,
        change: VmChange,
        *,
        phases: Iterable[str] | None = None,
        unbound: bool = False,
    ) -> int: ...
    def delete_vm(self, tx: Tx, vm_id: str) -> int: ...
    def insert_disk(self, tx: Tx, disk: NewVmDisk) -> None: ...
    def disks_for_vm(self, tx: Tx, vm_id: str) -> list[VmDiskRow]: ...
    def update_root_disk(self, tx: Tx, vm_id: str, change: RootDiskChange) -> int: ...
    def node_architectures(self, tx: Tx, node_ids: Iterable[str]) -> dict[str, str | None]: ...
    def vm_ids_on_node(self, tx: Tx, node_id: str) -> set[str]: ...
    def vm_names_by_image(self, tx: Tx, pool_id: str) -> dict[str, list[str]]: ...
    def runtimes_on_node(self, tx: Tx, node_id: str) -> dict[str, VmRuntimeRow]: ...
    def put_runtime(self, tx: Tx, row: VmRuntimeRow) -> None: ...
    def delete_runtimes(self, tx: Tx, vm_ids: Iterable[str]) -> int: ...

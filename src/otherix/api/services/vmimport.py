"""``vm import`` (issue 16): adopt an orphan disk of a pool instance as a new VM.

``import_vm`` checks the request (name, the instance: found, ``ready``, not cordoned,
its node live; the disk: a file of ``vms/`` or ``scratch/`` that the agent's last drift
report lists as an orphan, named relative to the pool root or by its absolute path on
the node), then in ONE transaction inserts the VM (bound to the instance's node, phase
``creating``, ``power_state`` stopped), its root disk row (no file yet) and a
``vm.import`` task, and bumps the node's revision. The agent renames the orphan into
``vms/<vm-id>/disk.<fmt>`` (``otherix.agent.drift.adopt``; it checks again that it is
an orphan, and the format with ``qemu-img info``).

Task hooks (registered in ``api/compose.py``): success stores the disk's path, format
and sizes and moves the VM to ``stopped``; failure moves it to ``error`` with the
task's error code as the reason. The agent moves the orphan only as its last step, so
a failed import never took it: ``vm delete`` then removes the VM and its (empty)
directory, and the orphan stays where it was, still reported by ``pool doctor``.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from otherix.api.clock import Clock
from otherix.api.deps import Principal
from otherix.api.services.drift import check_actionable, stored_items
from otherix.api.services.placement import PlacementService
from otherix.api.services.pools import PoolService, pool_not_found
from otherix.api.services.tasks import TaskService
from otherix.api.services.vms import VmService
from otherix.api.watch import WatchHub
from otherix.domain.names import looks_like_uuid, validate_vm_name
from otherix.errors import DiskNotOrphan, NotFound, PoolCordoned, ValidationFailed, VmNameInUse
from otherix.models.drift import VmImport
from otherix.models.heartbeat import TaskUpdate
from otherix.models.vms import VM
from otherix.store import Database, Tx, UniqueViolation
from otherix.store.ports.nodes import NodeStore
from otherix.store.ports.pools import PoolRow, PoolStore
from otherix.store.ports.tasks import TaskRow
from otherix.store.ports.vms import NewVm, NewVmDisk, RootDiskChange, VmChange, VmStore

__all__ = ["VM_IMPORT", "VmImportService"]

VM_IMPORT = "vm.import"


def _bad(message: str, field: str) -> ValidationFailed:
    return ValidationFailed(message, {"field": field})


def relative_disk(row: PoolRow, disk: str) -> str:
    """The disk as a path relative to the pool root (``disk_not_orphan`` when it names
    anything outside the pool's ``vms/`` or ``scratch/``)."""
    base = os.path.normpath(row.path)
    if "\x00" in disk or ".." in disk.split("/"):
        raise _bad("disk must not contain NUL or a '..' segment", "disk")
    if disk.startswith("/"):
        path = os.path.normpath(disk)
        if not path.startswith(base + "/"):
            raise DiskNotOrphan(
                f"{disk} is not inside pool {row.name!r} ({row.path}) on node {row.node_name}",
                {"disk": disk, "pool": row.name},
            )
        rel = os.path.relpath(path, base)
    else:
        rel = os.path.normpath(disk)
    if rel.split("/")[0] not in ("vms", "scratch") or "/" not in rel:
        raise DiskNotOrphan(
            f"{disk}: only an orphan disk of the pool's vms/ or scratch/ can be imported",
            {"disk": disk, "pool": row.name},
        )
    return rel


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass(kw_only=True, eq=False)
class VmImportService:
    """The import service, built once by ``api/compose.py`` with the collaborators below."""

    db: Database
    clock: Clock
    hub: WatchHub
    node_store: NodeStore
    pool_store: PoolStore
    vm_store: VmStore
    pool_service: PoolService
    task_service: TaskService
    vm_service: VmService
    placement_service: PlacementService

    def _instance(self, pool: str, node: str | None) -> PoolRow:
        if node is None:
            return self.pool_service.resolve_one(pool)
        if looks_like_uuid(pool):
            raise _bad("node cannot be combined with an instance UUID", "node")
        with self.db.read() as conn:
            rows = [r for r in self.pool_store.get_pools_by_name(conn, pool) if r.node_name == node]
        if not rows:
            raise NotFound(f"{pool_not_found(pool)} on node {node}")
        return rows[0]

    def _orphan(self, row: PoolRow, rel: str, disk: str) -> dict[str, Any]:
        with self.db.read() as conn:
            drift = self.pool_store.drift_of(conn, row.id)
            known = {d.vm_id.lower() for d in self.pool_store.disks_on_pool(conn, row.id)}
            importing = self.vm_store.list_vms(
                conn, after=None, limit=1000, phase="creating", pool_id=row.id
            )
        for vm in importing:  # another import of it under way: the agent would refuse one
            if vm.spec.get("imported_from") == rel:
                raise DiskNotOrphan(
                    f"{disk} is being imported by VM {vm.name} already",
                    {"disk": disk, "pool": row.name, "vm": vm.name},
                )
        for item in stored_items(drift, known):
            if item.get("path") == rel and item.get("type") == "file":
                return item
        raise DiskNotOrphan(
            f"{disk} is not an orphan disk of pool {row.name!r} on node {row.node_name} in "
            f"its agent's last report; see 'otherix pool doctor {row.name} --node "
            f"{row.node_name}'",
            {"disk": disk, "pool": row.name, "node": row.node_name},
        )

    def import_vm(self, principal: Principal, body: VmImport) -> VM:
        if (problem := validate_vm_name(body.name)) is not None:
            raise _bad(problem, "name")
        row = self._instance(body.pool, body.node)
        if row.cordoned:
            raise PoolCordoned(
                f'pool "{row.name}" on node {row.node_name} is cordoned: no VM may be placed '
                f"on it ('otherix pool uncordon {row.name} --node {row.node_name}')",
                {"pool": row.name, "node": row.node_name},
            )
        check_actionable(row, "import a disk")
        rel = relative_disk(row, body.disk)
        self._orphan(row, rel, body.disk)
        fmt = "raw" if rel.endswith(".raw") else "qcow2"  # the agent's sniff decides
        now = self.clock.now()
        vm_id = str(uuid.uuid4())
        try:
            with self.db.write() as conn:
                arch = body.arch or self.vm_store.node_architectures(conn, [row.node_id]).get(
                    row.node_id
                )
                spec: dict[str, Any] = {
                    "image_url": None,
                    "arch": arch,
                    "vcpus": body.vcpus,
                    "memory_mb": body.memory_mb,
                    "format": fmt,
                    "disk_gib": 0,
                    "pool": row.id,
                    "power_state": "stopped",
                    "imported_from": rel,
                }
                self.vm_store.insert_vm(
                    conn,
                    NewVm(
                        id=vm_id,
                        name=body.name,
                        owner_id=principal.user_id,
                        spec=spec,
                        pool_ref=row.id,
                        created_at=now,
                    ),
                )
                task_id = self.task_service.new_task(
                    conn,
                    now=now,
                    type=VM_IMPORT,
                    resource_type="vm",
                    resource_id=vm_id,
                    node_id=row.node_id,
                    args={"vm_id": vm_id, "pool": row.name, "path": row.path, "source": rel},
                    created_by=principal.user_id,
                    max_attempts=1,
                )
                change: VmChange = {
                    "node_id": row.node_id,
                    "phase": "creating",
                    "task_id": task_id,
                    "updated_at": now,
                }
                self.vm_store.update_vm(conn, vm_id, change)
                self.vm_store.insert_disk(
                    conn,
                    NewVmDisk(
                        id=str(uuid.uuid4()),
                        vm_id=vm_id,
                        storage_pool_id=row.id,
                        device_order=0,
                        size_gib=0,
                        format=fmt,
                        created_at=now,
                    ),
                )
                self.node_store.bump_revision(conn, row.node_id)
        except UniqueViolation as exc:
            raise VmNameInUse(
                f"a VM named {body.name!r} already exists", {"field": "name"}
            ) from exc
        self.hub.publish([row.node_id])
        return self.vm_service.get(principal, body.name)

    # vm.import outcomes (run inside the task update's transaction) ---------------------

    def on_import_success(self, conn: Tx, task: TaskRow, update: TaskUpdate, now: datetime) -> None:
        vm_id = task.resource_id or ""
        result = update.result or {}
        fmt = result.get("format")
        file_path = result.get("file_path")
        disk: RootDiskChange = {
            "file_path": file_path if isinstance(file_path, str) and file_path else None,
            "virtual_size_bytes": _int(result.get("virtual_size_bytes")),
            "actual_size_bytes": _int(result.get("disk_size_bytes")),
            "updated_at": now,
        }
        self.vm_store.update_root_disk(conn, vm_id, disk)
        vm = self.vm_store.get_vm(conn, vm_id)
        change: VmChange = {"phase": "stopped", "reason": None, "message": None, "updated_at": now}
        if vm is not None and fmt in ("qcow2", "raw"):
            change["spec"] = {**vm.spec, "format": fmt}
            self.pool_store.set_disk_format(conn, vm_id, str(fmt))
        self.vm_store.update_vm(conn, vm_id, change, phases=["creating"])

    def on_import_failure(
        self, conn: Tx, task: TaskRow, error: dict[str, Any], now: datetime
    ) -> None:
        self.placement_service.mark_error(conn, task, error, now, phases=["creating"])

"""Placing a VM on a pool instance and binding it there; the ``vm.create`` task.

``schedule_vm`` is one attempt for one VM (the scheduler worker and VM
admission call it): load the instances its pool names, ``decide`` (pure, in
``otherix.domain.placement``), then ``bind`` in ONE transaction that locks the pool
row (``SELECT ... FOR UPDATE`` on PostgreSQL; the disk's foreign key ``ON
DELETE RESTRICT`` backs it up, and SQLite serialises writers), re-checks the
decision against the locked row, claims the VM with a compare-and-set, writes
the root ``vm_disks`` row and the ``vm.create`` task, and bumps the node's
desired revision (the agent gets the task through its watch). A VM that
cannot be placed stays ``pending`` with the reason recorded (written only when
it changed).

The ``vm.create`` outcome hooks (registered in ``services.tasks``): a
``running`` report moves the VM to ``creating``; success stores the disk's
path and sizes and moves it to ``stopped``; failure or cancel (allowed only
while the task is pending) moves it to ``error`` with the task's error code
as ``status.reason``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from threading import Lock
from typing import Any

from otherix.api.clock import Clock
from otherix.api.services.tasks import TaskService
from otherix.api.watch import WatchHub
from otherix.domain.liveness import projected_status
from otherix.domain.names import looks_like_uuid
from otherix.domain.placement import Ask, Candidate, Unplaceable, decide, effective_bytes
from otherix.models.heartbeat import TaskUpdate, VmObservation
from otherix.store import Database, ForeignKeyViolation, Tx
from otherix.store.ports import JSONValue
from otherix.store.ports.nodes import NodeStore
from otherix.store.ports.pools import PoolRow, PoolStore
from otherix.store.ports.tasks import TaskRow
from otherix.store.ports.vms import (
    NewVmDisk,
    RootDiskChange,
    VmChange,
    VmRecord,
    VmRuntimeRow,
    VmStore,
)

log = logging.getLogger(__name__)

CREATE = "vm.create"
#: ``max_attempts`` of a new ``vm.create``: the node agent's
#: ``tasks.vm_create_attempts`` default (docs/configuration.md). The agent
#: retries the task itself and may report its own count and limit
#: (``TaskUpdate.attempt``/``max_attempts``), which then replace these.
VM_CREATE_ATTEMPTS = 3


# I/O: candidates, binding, recording -------------------------------------------------------


def _candidate(row: PoolRow, arch: str | None) -> Candidate:
    effective = effective_bytes(row.available_bytes, row.committed_gib)
    orphaned = row.node_deleted_at is not None
    since = row.pressure_since
    return Candidate(
        pool_id=row.id,
        pool_name=row.name,
        pool_path=row.path,
        node_id=row.node_id,
        node=row.node_name,
        node_status="gone" if orphaned else projected_status(row.node_liveness, row.node_cordoned),
        architecture=arch,
        reconciliation_status=row.reconciliation_status,
        pressure_since=since.isoformat().replace("+00:00", "Z") if since else None,
        effective_bytes=effective,
        cordoned=row.cordoned,
    )


@dataclass(kw_only=True, eq=False)
class PlacementService:
    """The placement service, built once by ``api/compose.py`` with the collaborators below."""

    db: Database
    clock: Clock
    hub: WatchHub
    placement_lock: Lock
    node_store: NodeStore
    pool_store: PoolStore
    vm_store: VmStore
    task_service: TaskService

    def load_candidates(self, conn: Tx, pool_ref: str) -> list[Candidate]:
        if looks_like_uuid(pool_ref):
            row = self.pool_store.get_pool(conn, pool_ref.lower())
            rows = [row] if row else []
        else:
            rows = self.pool_store.get_pools_by_name(conn, pool_ref)
        archs = self.vm_store.node_architectures(conn, (r.node_id for r in rows))
        return [_candidate(r, archs.get(r.node_id)) for r in rows]

    def bind(self, vm: VmRecord, ask: Ask, c: Candidate) -> str:
        """Bind ``vm`` to ``c`` in one transaction; returns the vm.create task id."""
        with self.db.write() as conn:
            if self.pool_store.lock_pool(conn, c.pool_id) is None:
                raise _Retry
            row = self.pool_store.get_pool(conn, c.pool_id)
            if row is None or not isinstance(
                decide(ask, [_candidate(row, c.architecture)]), Candidate
            ):
                raise _Retry
            now = self.clock.now()
            task_id = self.task_service.new_task(
                conn,
                now=now,
                type=CREATE,
                resource_type="vm",
                resource_id=vm.id,
                node_id=c.node_id,
                args=create_args(vm, c),
                created_by=vm.owner_id,
                max_attempts=VM_CREATE_ATTEMPTS,
            )
            claimed = self.vm_store.update_vm(
                conn,
                vm.id,
                {
                    "node_id": c.node_id,
                    "task_id": task_id,
                    "reason": None,
                    "message": None,
                    "status_details": None,
                    "updated_at": now,
                },
                phases=["pending"],
                unbound=True,
            )
            if not claimed:
                raise _Lost
            self.vm_store.insert_disk(
                conn,
                NewVmDisk(
                    id=str(uuid.uuid4()),
                    vm_id=vm.id,
                    storage_pool_id=c.pool_id,
                    device_order=0,
                    size_gib=ask.disk_gib,
                    format=str(vm.spec["format"]),
                    created_at=now,
                ),
            )
            self.node_store.bump_revision(conn, c.node_id)
        self.hub.publish([c.node_id])
        log.info("vm scheduled: %s on node %s pool %s", vm.name, c.node, c.pool_name)
        return task_id

    def _record(self, vm: VmRecord, why: Unplaceable) -> bool:
        if (vm.reason, vm.message, vm.status_details) == (
            why.reason,
            why.message,
            why.details,
        ):
            return False
        with self.db.write() as conn:
            return bool(
                self.vm_store.update_vm(
                    conn,
                    vm.id,
                    {
                        "reason": why.reason,
                        "message": why.message,
                        "status_details": why.details,
                        "updated_at": self.clock.now(),
                    },
                    phases=["pending"],
                    unbound=True,
                )
            )

    def unscheduled(self, limit: int) -> list[VmRecord]:
        """Up to ``limit`` VMs that wait for a placement, oldest first."""
        with self.db.read() as conn:
            return self.vm_store.unscheduled(conn, limit)

    def schedule_vm(self, vm: VmRecord, cache: dict[str, list[Candidate]] | None = None) -> str:
        """One placement attempt: ``bound``, ``unplaceable`` or ``skipped`` (lost a race)."""
        ask = ask_of(vm)
        cache = {} if cache is None else cache
        with self.placement_lock:  # one placement at a time (Deps.placement_lock)
            for _attempt in range(3):
                key = ask.pool.lower()
                if key not in cache:
                    with self.db.read() as conn:
                        cache[key] = self.load_candidates(conn, ask.pool)
                choice = decide(ask, cache[key])
                if isinstance(choice, Unplaceable):
                    self._record(vm, choice)
                    return "unplaceable"
                try:
                    self.bind(vm, ask, choice)
                except (_Retry, ForeignKeyViolation):
                    cache.clear()
                    continue
                except _Lost:
                    return "skipped"
                cache.clear()  # room changed
                return "bound"
        return "skipped"

    def mark_error(
        self, conn: Tx, task: TaskRow, error: dict[str, Any], now: datetime, phases: list[str]
    ) -> None:
        """The task's VM moves to ``error`` (if still in one of ``phases``) with the
        task's error code as the reason."""
        code = _str(error.get("code"), 64) or "internal"
        message = str(error.get("message") or f"{task.type} failed")
        change: VmChange = {"phase": "error", "reason": code, "message": message, "updated_at": now}
        self.vm_store.update_vm(conn, task.resource_id or "", change, phases=phases)

    def on_create_running(
        self, conn: Tx, task: TaskRow, _update: TaskUpdate, now: datetime
    ) -> None:
        change: VmChange = {"phase": "creating", "updated_at": now}
        self.vm_store.update_vm(conn, task.resource_id or "", change, phases=["pending"])

    def on_create_success(self, conn: Tx, task: TaskRow, update: TaskUpdate, now: datetime) -> None:
        result = update.result or {}
        disk: RootDiskChange = {
            "file_path": _str(result.get("file_path"), 2048),
            "virtual_size_bytes": _int(result.get("virtual_size_bytes")),
            "actual_size_bytes": _int(result.get("disk_size_bytes")),
            "image_sha256": _str(result.get("image_sha256"), 64),
            "updated_at": now,
        }
        self.vm_store.update_root_disk(conn, task.resource_id or "", disk)
        change: VmChange = {"phase": "stopped", "reason": None, "message": None, "updated_at": now}
        moved = self.vm_store.update_vm(
            conn, task.resource_id or "", change, phases=["pending", "creating"]
        )
        power = result.get("power")
        if moved and isinstance(power, dict):  # the start the agent made once the disk was
            store_runtime(self.vm_store, conn, task.resource_id or "", power, now)

    def on_create_failure(
        self, conn: Tx, task: TaskRow, error: dict[str, Any], now: datetime
    ) -> None:
        self.mark_error(conn, task, error, now, phases=["pending", "creating"])


def store_runtime(
    vm_store: VmStore, conn: Tx, vm_id: str, observed: dict[str, Any], now: datetime
) -> None:
    """Store a VM observation an agent put in a task result (``VmObservation``); one
    that does not parse is ignored (the next heartbeat carries the VM's state)."""
    try:
        obs = VmObservation.model_validate(observed)
    except ValueError:
        log.warning("ignoring a malformed VM observation in a task result for vm %s", vm_id)
        return
    row = VmRuntimeRow(vm_id, obs.state, obs.model_dump(mode="json", exclude={"id"}), now)
    vm_store.put_runtime(conn, row)


def _text(value: JSONValue) -> str | None:
    return value if isinstance(value, str) else None


def ask_of(vm: VmRecord) -> Ask:
    spec = vm.spec or {}
    assert vm.pool_ref is not None  # admission always writes one; unscheduled() skips the rest
    disk_gib = spec.get("disk_gib", 0)
    return Ask(
        pool=vm.pool_ref,
        node=_text(spec.get("node")),
        disk_gib=disk_gib if isinstance(disk_gib, int) else 0,
        arch=_text(spec.get("arch")),
    )


class _Retry(Exception):
    """The chosen instance changed under us (deleted, filled, no longer eligible)."""


class _Lost(Exception):
    """Someone else bound or deleted the VM first."""


def create_args(vm: VmRecord, c: Candidate) -> dict[str, Any]:
    spec = vm.spec
    return {
        "vm_id": vm.id,
        "pool_path": c.pool_path,
        "pool_name": c.pool_name,
        "image_url": spec["image_url"],
        "image_sha256": spec.get("image_sha256"),
        "pull_policy": spec.get("pull_policy", "if-not-present"),
        "format": spec.get("format", "qcow2"),
        "disk_gib": spec.get("disk_gib", 0),
        # what the agent needs to start the VM once its disk is made (vmpower.PowerArgs)
        **launch_args(vm),
        "start": spec.get("power_state", "running") == "running",
    }


def launch_args(vm: VmRecord) -> dict[str, Any]:
    """What a start needs besides the disk: the VM's name, size and restart policy."""
    spec = vm.spec
    return {
        "name": vm.name,
        "vcpus": spec.get("vcpus"),
        "memory_mb": spec.get("memory_mb"),
        "restart_policy": spec.get("restart_policy", "on-failure"),
    }


# vm.create outcomes (run inside the task update's transaction) ----------------------------


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _str(value: object, limit: int) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= limit else None

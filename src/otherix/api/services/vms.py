"""VMs as owners of disks on pools: admission, views, lists, delete, and the
``vm.create`` / ``vm.delete`` task outcomes.

- Admission (``create``) checks the request, substitutes the cluster default
  pool, stores the VM ``pending`` and makes a first placement attempt
  (``placement.schedule_vm``); the scheduler worker retries the rest. A dry
  run (``Database.rehearse``) rolls the insert back and answers the VM as the
  first placement attempt would leave it, without binding it.
- Missing disks (``domain.vms.disk_missing``): a made disk on a failed pool,
  or whose file the agent reports gone, is ``missing`` in the disk view; a
  ``stopped`` VM whose root disk is missing shows ``status.reason
  "disk_missing"`` (phase unchanged), computed at read time, never stored.
- Visibility: a caller whose ``vm:delete`` scope is ``own`` (a developer) is a
  tenant and sees only its own VMs; read-only roles (viewer) and admins and
  operators see all. Invisible VMs answer 404. Host layout (disk
  ``file_path``, paths in ``status.message``) is shown to callers with the
  full node view (admin, operator) only: ``services.redaction``, the same
  function the task views use.
- Delete: an unplaced VM (or one whose node was deleted) is removed at once;
  a placed one moves to ``deleting`` with a ``vm.delete`` task for its node
  (a still-pending ``vm.create`` is cancelled), and the rows go when the agent
  reports success, which is what unblocks a pool delete.
- Task hooks (registered in ``services.tasks``): ``vm.create`` running ->
  ``creating``; success -> ``stopped`` with the disk's path and sizes stored;
  failure or cancel -> ``error`` with the task's error code as the reason.
  ``vm.delete`` success removes the rows; failure -> ``error``.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from otherix.api.clock import Clock
from otherix.api.deps import Principal
from otherix.api.services import placement, tasks
from otherix.api.services.defaultpool import DefaultPoolService
from otherix.api.services.nodes import NodeService, name_param
from otherix.api.services.placement import PlacementService
from otherix.api.services.redaction import redact
from otherix.api.services.tasks import TaskService
from otherix.api.watch import WatchHub
from otherix.domain.names import (
    looks_like_uuid,
    validate_node_name,
    validate_pool_name,
    validate_vm_name,
)
from otherix.domain.placement import Unplaceable, decide
from otherix.domain.vms import disk_missing, validate_image_url, validate_sha256
from otherix.errors import (
    DefaultPoolNotSet400,
    NotFound,
    ValidationFailed,
    VmNameInUse,
    not_found_message,
)
from otherix.models.common import AsyncTaskAccepted
from otherix.models.heartbeat import TaskUpdate
from otherix.models.pagination import decode_cursor, split_page
from otherix.models.vms import VM, VMCreate, VmDisk, VMStatus
from otherix.rbac import Permission, Scope
from otherix.store import Database, StoreError, Tx, UniqueViolation
from otherix.store.ports.nodes import NodeStore
from otherix.store.ports.tasks import TaskChange, TaskRow, TaskStore
from otherix.store.ports.vms import NewVm, VmChange, VmDiskRow, VmRow, VmStore

log = logging.getLogger(__name__)

DELETE = "vm.delete"
HINT = "Use 'otherix vm list' to discover names."


def vm_not_found(name: str) -> str:
    return not_found_message("VM", name, "otherix vm list")


def _owner_filter(principal: Principal) -> str | None:
    """The owner a caller is limited to (developers), or None (everyone)."""
    own = principal.scope(Permission.VM_DELETE) is Scope.OWN
    return principal.user_id if own or principal.scope(Permission.VM_READ) is Scope.OWN else None


def _vm_name(name: str) -> str:
    try:
        return name_param(name)
    except ValidationFailed as exc:
        raise ValidationFailed(exc.message, {**(exc.details or {}), "hint": HINT}) from exc


def _disk_missing_status(row: VmRow) -> VMStatus | None:
    """``status`` of a stopped VM whose root disk is missing, else None."""
    missing = disk_missing(row.root_file_path, row.root_missing_since, row.root_pool_status)
    if row.phase != "stopped" or missing is None:
        return None
    pool = row.root_pool_name or row.pool_ref
    details: dict[str, Any] = {"pool": pool, "pool_id": row.root_pool_id, "cause": missing}
    if missing == "pool_failed":
        details["pool_reason"] = row.root_pool_reason
        message = (
            f'the disk\'s pool "{pool}" on node {row.node_name} is failed '
            f"({row.root_pool_reason or 'failed'}); see 'otherix pool get {pool}'"
        )
    else:
        details["since"] = row.root_missing_since
        message = f'the disk file is missing from pool "{pool}" on node {row.node_name}'
    return VMStatus(
        phase="stopped",
        reason="disk_missing",
        message=message,
        details=details,
        task_id=row.task_id,
    )


@dataclass(kw_only=True, eq=False)
class VmService:
    """The vms service, built once by ``api/compose.py`` with the collaborators below."""

    db: Database
    clock: Clock
    hub: WatchHub
    node_store: NodeStore
    task_store: TaskStore
    vm_store: VmStore
    default_pool_service: DefaultPoolService
    node_service: NodeService
    placement_service: PlacementService
    task_service: TaskService

    def vm_view(self, row: VmRow, disks: list[VmDisk] | None = None) -> VM:
        spec = row.spec or {}
        status = _disk_missing_status(row) or VMStatus(
            phase=row.phase,
            reason=row.reason,
            message=row.message,
            details=row.status_details,
            task_id=row.task_id,
        )
        return VM.model_validate(
            {
                **{k: spec.get(k) for k in ("image_url", "image_sha256", "vcpus", "memory_mb")},
                **{k: spec[k] for k in ("pull_policy", "format", "disk_gib") if k in spec},
                "id": row.id,
                "name": row.name,
                "owner_id": row.owner_id,
                "owner": row.owner,
                "architecture": spec.get("arch"),
                "pool": row.root_pool_name or row.pool_ref,
                "pool_id": row.root_pool_id,
                "node": row.node_name,
                "node_hint": spec.get("node"),
                "status": status,
                "disks": disks,
                "created_at": row.created_at,
                "updated_at": row.updated_at,
            }
        )

    def _rehearsed(self, conn: Tx, principal: Principal, stored: VmRow) -> VM:
        """What a dry run answers: the admitted VM as its first placement attempt
        would leave it (bound to an instance, or pending with the reason), unwritten."""
        ask = placement.ask_of(stored)
        choice = decide(ask, self.placement_service.load_candidates(conn, ask.pool))
        if isinstance(choice, Unplaceable):
            outcome = dataclasses.replace(
                stored, reason=choice.reason, message=choice.message, status_details=choice.details
            )
        else:
            outcome = dataclasses.replace(
                stored,
                node_name=choice.node,
                root_pool_id=choice.pool_id,
                root_pool_name=choice.pool_name,
            )
        return self.vm_view(_as_seen(principal, outcome))

    def create(self, principal: Principal, body: VMCreate, *, dry_run: bool = False) -> VM:
        """Admit a VM and try to place it once; ``dry_run`` decides the same and writes nothing."""
        _check(body)
        now = self.clock.now()
        vm_id = str(uuid.uuid4())
        spec = body.model_dump(exclude={"name"})
        if body.image_sha256 is not None:
            spec["image_sha256"] = body.image_sha256.lower()
        try:
            with self.db.rehearse() if dry_run else self.db.write() as conn:
                pool = body.pool.lower() if body.pool and looks_like_uuid(body.pool) else body.pool
                if pool is None:
                    pool = self.default_pool_service.current_name(conn)
                    if not pool:
                        raise DefaultPoolNotSet400()
                spec["pool"] = pool
                row = NewVm(
                    id=vm_id,
                    name=body.name,
                    owner_id=principal.user_id,
                    spec=spec,
                    pool_ref=pool,
                    created_at=now,
                )
                admitted = self.vm_store.insert_vm(conn, row)
                if dry_run:
                    stored = self.vm_store.get_vm(conn, vm_id)
                    assert stored is not None
                    rehearsed = self._rehearsed(conn, principal, stored)
        except UniqueViolation as exc:
            raise VmNameInUse(
                f"a VM named {body.name!r} already exists", {"field": "name"}
            ) from exc
        if dry_run:  # rolled back: no placement, no task
            return rehearsed
        try:
            self.placement_service.schedule_vm(admitted)
        except StoreError:  # admitted all the same; the scheduler worker retries
            log.warning("first placement attempt for vm %s failed", body.name, exc_info=True)
        with self.db.read() as conn:
            stored = self.vm_store.get_vm(conn, vm_id)
        assert stored is not None
        return self.vm_view(_as_seen(principal, stored))

    def _visible_row(self, principal: Principal, name: str, conn: Tx) -> VmRow:
        row = self.vm_store.get_vm_by_name(conn, _vm_name(name))
        owner = _owner_filter(principal)
        if row is None or (owner is not None and row.owner_id != owner):
            raise NotFound(vm_not_found(name))
        return row

    def get(self, principal: Principal, name: str) -> VM:
        with self.db.read() as conn:
            row = self._visible_row(principal, name, conn)
            disks = self.vm_store.disks_for_vm(conn, row.id)
        views = [_disk_view(principal, d) for d in disks]
        return self.vm_view(_as_seen(principal, row), views)

    def list_vms(
        self,
        principal: Principal,
        *,
        limit: int,
        cursor: str | None,
        pool: str | None,
        node: str | None,
        status: str | None,
    ) -> tuple[list[VM], str | None]:
        after = decode_cursor(cursor) if cursor else None
        with self.db.read() as conn:
            node_id = self.node_service.node_filter_id(conn, node)
            by_id = pool is not None and looks_like_uuid(pool)
            rows = self.vm_store.list_vms(
                conn,
                after=after,
                limit=limit + 1,
                owner_id=_owner_filter(principal),
                node_id=node_id,
                phase=status,
                pool_id=pool.lower() if pool and by_id else None,
                pool_name=None if by_id else pool,
            )
        page, nxt = split_page(rows, limit)
        return [self.vm_view(_as_seen(principal, r)) for r in page], nxt

    def _cancel(self, conn: Tx, task_id: str | None, now: datetime, *, any_type: bool) -> None:
        """Cancel the VM's pending vm.create (``any_type``: any unfinished task)."""
        task = self.task_store.get_task(conn, task_id) if task_id else None
        if task is None or task.status in tasks.FINAL:
            return
        if any_type or (task.type == placement.CREATE and task.status == "pending"):
            values: TaskChange = {
                "status": "cancelled",
                "error": {"code": "cancelled", "message": "the VM was deleted"},
                "finished_at": now,
            }
            self.task_store.update_task(
                conn, task.id, values, only_if_status=["pending", "running"]
            )

    def delete(self, principal: Principal, name: str) -> AsyncTaskAccepted | None:
        """None: gone now (204). Otherwise the vm.delete task (202).

        Lock order is task row, then VM row, as in agent task reports and cancels."""
        now = self.clock.now()
        with self.db.write() as conn:
            row = self._visible_row(principal, name, conn)
            self._cancel(conn, row.task_id, now, any_type=False)
            vm = self.vm_store.lock_vm(conn, row.id)
            if vm is None:
                raise NotFound(vm_not_found(name))
            node = self.node_store.get_node(conn, vm.node_id) if vm.node_id else None
            if node is None:  # never placed, or its node was deleted: nothing to clean up
                self._cancel(conn, vm.task_id, now, any_type=True)
                self.vm_store.delete_vm(conn, vm.id)
                return None
            current = self.task_store.get_task(conn, vm.task_id) if vm.task_id else None
            if vm.phase == "deleting" and current and current.status not in tasks.FINAL:
                return AsyncTaskAccepted.model_validate(
                    {**tasks.accepted(current.id).model_dump(), "status": current.status}
                )
            self._cancel(conn, vm.task_id, now, any_type=False)  # placed since the first read
            disk = next(iter(self.vm_store.disks_for_vm(conn, vm.id)), None)
            args = {
                "vm_id": vm.id,
                "pool_name": disk.pool if disk else None,
                "pool_path": disk.pool_path if disk else None,
                "file_path": disk.file_path if disk else None,
                "format": disk.format if disk else vm.spec.get("format", "qcow2"),
            }
            task_id = self.task_service.new_task(
                conn,
                now=now,
                type=DELETE,
                resource_type="vm",
                resource_id=vm.id,
                node_id=node.id,
                args=args,
                created_by=principal.user_id,
                max_attempts=1,
            )
            change: VmChange = {
                "phase": "deleting",
                "reason": None,
                "message": None,
                "status_details": None,
                "task_id": task_id,
                "updated_at": now,
            }
            self.vm_store.update_vm(conn, vm.id, change)
            self.node_store.bump_revision(conn, node.id)
        self.hub.publish([node.id])
        return tasks.accepted(task_id)

    # vm.delete outcomes (run inside the task update's transaction) ----------------------------

    def on_delete_success(
        self, conn: Tx, task: TaskRow, _update: TaskUpdate, now: datetime
    ) -> None:
        self.vm_store.delete_vm(conn, task.resource_id or "")

    def on_delete_failure(
        self, conn: Tx, task: TaskRow, error: dict[str, Any], now: datetime
    ) -> None:
        self.placement_service.mark_error(conn, task, error, now, phases=["deleting"])


def _bad(message: str, field: str) -> ValidationFailed:
    return ValidationFailed(message, {"field": field})


def _check(body: VMCreate) -> None:
    for field, problem in (
        ("name", validate_vm_name(body.name)),
        ("image_url", validate_image_url(body.image_url)),
        ("image_sha256", body.image_sha256 is not None and validate_sha256(body.image_sha256)),
        ("node", body.node is not None and validate_node_name(body.node)),
    ):
        if problem:
            raise _bad(str(problem), field)
    _vm_name(body.name)
    if body.node is not None:
        name_param(body.node, "node")
    pool = body.pool
    if pool is not None and not looks_like_uuid(pool) and (problem := validate_pool_name(pool)):
        raise _bad(problem, "pool")


def _as_seen(principal: Principal, row: VmRow) -> VmRow:
    """The VM row with its agent-reported status as ``principal`` may see it."""
    return dataclasses.replace(
        row,
        message=redact(principal, row.message),
        status_details=redact(principal, row.status_details),
    )


def _disk_view(principal: Principal, d: VmDiskRow) -> VmDisk:
    """One disk as ``principal`` may see it (``services.redaction``), with whether
    its file is missing (judged on the unredacted row)."""
    missing = disk_missing(d.file_path, d.missing_since, d.pool_status)
    seen = {
        **dataclasses.asdict(d),
        "missing": missing is not None,
        "missing_reason": missing,
        "missing_since": d.missing_since if missing == "file_missing" else None,
    }
    return VmDisk.model_validate(redact(principal, seen))

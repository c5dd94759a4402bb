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
- Power (docs/vm-runtime.md): ``power`` checks the VM can take the verb
  (phase ``stopped``, i.e. its disk is ready; for a start its pool not
  failed, its disk not missing; its node ``ready``), records the desired
  power state in the spec and makes a ``vm.<verb>`` task for the node (one
  attempt; the same verb again answers the unfinished task; another verb
  while one is unfinished is a 409). The node's observations
  (``vm_runtime``, from heartbeats and power task results) are the VM's
  ``status.state`` and ``status.runtime``. A delete of a VM whose QEMU runs
  needs ``force`` (the agent powers it off first); the agent checks again.
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
from otherix.api.services.placement import PlacementService, launch_args, store_runtime
from otherix.api.services.redaction import redact
from otherix.api.services.tasks import TaskService
from otherix.api.watch import WatchHub
from otherix.domain.names import (
    looks_like_uuid,
    validate_node_name,
    validate_pool_name,
    validate_vm_name,
)
from otherix.domain.placement import Ask, Unplaceable, decide
from otherix.domain.vms import (
    POWER_AFTER,
    PowerAction,
    disk_missing,
    validate_image_url,
    validate_sha256,
)
from otherix.errors import (
    Conflict,
    DefaultPoolNotSet400,
    NotFound,
    PoolCordoned,
    ValidationFailed,
    VmNameInUse,
    VmNotStartable,
    VmRunning,
    not_found_message,
)
from otherix.models.common import AsyncTaskAccepted
from otherix.models.heartbeat import TaskUpdate
from otherix.models.pagination import decode_cursor, split_page
from otherix.models.vms import VM, VmConsole, VMCreate, VmDisk, VmRuntimeView, VMStatus
from otherix.rbac import Permission, Scope
from otherix.store import Database, StoreError, Tx, UniqueViolation
from otherix.store.ports.nodes import NodeStore
from otherix.store.ports.tasks import TaskChange, TaskRow, TaskStore
from otherix.store.ports.vms import NewVm, VmChange, VmDiskRow, VmRow, VmStore

log = logging.getLogger(__name__)

DELETE = "vm.delete"
HINT = "Use 'otherix vm list' to discover names."
POWER_TASKS = ("vm.start", "vm.stop", "vm.restart", "vm.poweroff")
#: states in which the VM's QEMU is there (a delete needs ``force``)
LIVE_STATES = ("starting", "running", "stopping")
#: console lines the VM view shows of a crashed or failed VM
_TAIL = 10


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _runtime(row: VmRow, now: datetime) -> tuple[str | None, VmRuntimeView | None]:
    """The VM's ``status.state`` and ``status.runtime`` from its node's last report."""
    rt = row.runtime
    if rt is None:
        return ("stopped" if row.phase in ("stopped", "deleting") else None), None
    state = str(rt.get("state") or "")
    started = _when(rt.get("started_at"))
    live = state in LIVE_STATES
    console = rt.get("console")
    lines = [str(x) for x in console] if isinstance(console, list) else []
    view = VmRuntimeView.model_validate(
        {
            **{k: rt.get(k) for k in ("pid", "accelerator", "exit_status", "detail", "limits")},
            "pid": rt.get("pid") if live else None,
            "started_at": started,
            "uptime_seconds": max(0, int((now - started).total_seconds()))
            if live and started
            else None,
            "restarts": rt.get("restarts") or 0,
            "next_restart_at": _when(rt.get("next_restart_at")),
            "console_tail": lines[-_TAIL:] if state in ("crashed", "failed") else [],
            "observed_at": row.runtime_at,
        }
    )
    return state, view


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
        state, runtime = _runtime(row, self.clock.now())
        status = status.model_copy(update={"state": state, "runtime": runtime})
        return VM.model_validate(
            {
                **{k: spec.get(k) for k in ("image_url", "image_sha256", "vcpus", "memory_mb")},
                **{
                    k: spec[k]
                    for k in ("pull_policy", "format", "disk_gib", "power_state", "restart_policy")
                    if k in spec
                },
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
                if body.pool is not None:  # asked for by name: a cordoned pool says so now
                    self._refuse_cordoned(conn, body, pool)
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

    def _refuse_cordoned(self, conn: Tx, body: VMCreate, pool: str) -> None:
        """``pool_cordoned`` when the pool the VM names (on its node hint, if any) is
        cordoned everywhere it could go; any other reason leaves the VM pending."""
        ask = Ask(pool=pool, node=body.node, disk_gib=body.disk_gib, arch=body.arch)
        choice = decide(ask, self.placement_service.load_candidates(conn, pool))
        if not isinstance(choice, Unplaceable):
            return
        on_node = choice.reason == "pool_not_on_node" and (
            choice.details.get("excluded") == "pool_cordoned"
        )
        if choice.reason == "pool_cordoned" or on_node:
            where = f" on node {body.node}" if on_node else ""
            raise PoolCordoned(
                f'pool "{pool}"{where} is cordoned: new VMs may not be placed on it '
                f"('otherix pool uncordon {pool}' to allow them again)",
                {"field": "pool", "pool": pool, **({"node": body.node} if on_node else {})},
            )

    def visible_row(self, principal: Principal, name: str, conn: Tx) -> VmRow:
        """The VM named ``name`` as ``principal`` may see it (404 otherwise)."""
        return self._visible_row(principal, name, conn)

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

    def delete(
        self, principal: Principal, name: str, *, force: bool = False
    ) -> AsyncTaskAccepted | None:
        """None: gone now (204). Otherwise the vm.delete task (202). A VM whose QEMU runs
        needs ``force`` (its agent powers it off first).

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
            if vm.phase == "moving":  # the move ends first (its task cancelled, or done)
                raise Conflict(
                    f"VM {row.name} is being moved ({vm.task_id}): wait for the move "
                    f"('otherix task wait {vm.task_id}') or cancel it "
                    f"('otherix task cancel {vm.task_id}'), then delete it",
                    {"reason": "vm_moving", "task_id": vm.task_id},
                )
            if vm.phase == "deleting" and current and current.status not in tasks.FINAL:
                return AsyncTaskAccepted.model_validate(
                    {**tasks.accepted(current.id).model_dump(), "status": current.status}
                )
            self._cancel(conn, vm.task_id, now, any_type=False)  # placed since the first read
            state = (row.runtime or {}).get("state")
            if state in LIVE_STATES and not force:
                raise VmRunning(
                    f"VM {row.name} is {state}: stop it first ('otherix vm stop {row.name}'), "
                    "or delete it with --force, which powers it off",
                    {"state": state, "hint": f"otherix vm delete {row.name} --force"},
                )
            if current is not None and current.type in POWER_TASKS:  # the delete wins
                self._cancel(conn, current.id, now, any_type=True)
            disk = next(iter(self.vm_store.disks_for_vm(conn, vm.id)), None)
            args = {
                "vm_id": vm.id,
                "pool_name": disk.pool if disk else None,
                "pool_path": disk.pool_path if disk else None,
                "file_path": disk.file_path if disk else None,
                "format": disk.format if disk else vm.spec.get("format", "qcow2"),
                "force": force,
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
        if error.get("code") == "vm_running":  # refused by the agent: nothing was removed
            change: VmChange = {
                "phase": "stopped",
                "reason": None,
                "message": None,
                "updated_at": now,
            }
            self.vm_store.update_vm(conn, task.resource_id or "", change, phases=["deleting"])
            return
        self.placement_service.mark_error(conn, task, error, now, phases=["deleting"])

    # power ------------------------------------------------------------------------------

    def _check_power(self, conn: Tx, vm: VmRow, action: PowerAction) -> None:
        """Refuse a verb the VM cannot take now (module docstring)."""
        starts = action in ("start", "restart")
        if vm.phase != "stopped" or vm.node_id is None:
            raise VmNotStartable(
                f"VM {vm.name} is {vm.phase}: only a VM whose disk is ready can be "
                f"{'started' if starts else 'stopped'}",
                {"reason": "vm_not_ready", "phase": vm.phase},
            )
        node = self.node_store.get_node(conn, vm.node_id)
        if node is None or node.status != "ready":
            status = node.status if node else "gone"
            details = {"reason": "node_unreachable", "node": vm.node_name, "node_status": status}
            message = f"VM {vm.name}'s node {vm.node_name} is {status}"
            raise VmNotStartable(message, details) if starts else Conflict(message, details)
        if not starts:
            return
        missing = disk_missing(vm.root_file_path, vm.root_missing_since, vm.root_pool_status)
        pool = vm.root_pool_name or vm.pool_ref
        if missing == "pool_failed":
            raise VmNotStartable(
                f'VM {vm.name} cannot start: its disk\'s pool "{pool}" on node {vm.node_name} '
                f"is failed ({vm.root_pool_reason or 'failed'}); see 'otherix pool get {pool}'",
                {"reason": "pool_failed", "pool": pool, "pool_reason": vm.root_pool_reason},
            )
        if missing is not None:
            raise VmNotStartable(
                f'VM {vm.name} cannot start: its disk is missing from pool "{pool}" '
                f"on node {vm.node_name}",
                {"reason": "disk_missing", "pool": pool},
            )

    def power(
        self, principal: Principal, name: str, action: PowerAction, *, timeout: int = 60
    ) -> AsyncTaskAccepted:
        """Make the ``vm.<action>`` task (202), or answer the same verb's unfinished one."""
        now = self.clock.now()
        with self.db.write() as conn:
            row = self._visible_row(principal, name, conn)
            if self.vm_store.lock_vm(conn, row.id) is None:
                raise NotFound(vm_not_found(name))
            # as locked: a concurrent verb that committed first is seen here
            row = self._visible_row(principal, name, conn)
            current = self.task_store.get_task(conn, row.task_id) if row.task_id else None
            unfinished = current is not None and current.status not in tasks.FINAL
            if current is not None and unfinished and current.type in POWER_TASKS:
                if current.type == f"vm.{action}":
                    return AsyncTaskAccepted.model_validate(
                        {**tasks.accepted(current.id).model_dump(), "status": current.status}
                    )
                raise Conflict(
                    f"VM {row.name} has a {current.type} task in progress ({current.id}); "
                    f"wait for it ('otherix task wait {current.id}')",
                    {
                        "reason": "power_task_in_progress",
                        "task_id": current.id,
                        "type": current.type,
                    },
                )
            self._check_power(conn, row, action)
            assert row.node_id is not None
            disk = next(iter(self.vm_store.disks_for_vm(conn, row.id)), None)
            args = {
                "vm_id": row.id,
                "pool_name": disk.pool if disk else None,
                "pool_path": disk.pool_path if disk else None,
                "format": disk.format if disk else row.spec.get("format", "qcow2"),
                "timeout_seconds": timeout,
                **launch_args(row),
            }
            task_id = self.task_service.new_task(
                conn,
                now=now,
                type=f"vm.{action}",
                resource_type="vm",
                resource_id=row.id,
                node_id=row.node_id,
                args=args,
                created_by=principal.user_id,
                max_attempts=1,
            )
            change: VmChange = {
                "spec": {**row.spec, "power_state": POWER_AFTER[action]},
                "task_id": task_id,
                "updated_at": now,
            }
            self.vm_store.update_vm(conn, row.id, change)
            self.node_store.bump_revision(conn, row.node_id)
        self.hub.publish([row.node_id])
        return tasks.accepted(task_id)

    def console(self, principal: Principal, name: str) -> VmConsole:
        """The last lines of the VM's serial console, as its node last reported them."""
        with self.db.read() as conn:
            row = self._visible_row(principal, name, conn)
        state, _ = _runtime(row, self.clock.now())
        rt = row.runtime or {}
        lines = rt.get("console")
        return VmConsole(
            name=row.name,
            state=state,
            lines=[str(x) for x in lines] if isinstance(lines, list) else [],
            observed_at=row.runtime_at,
        )

    # power task outcomes (run inside the task update's transaction) -----------------------

    def on_power_success(self, conn: Tx, task: TaskRow, update: TaskUpdate, now: datetime) -> None:
        if isinstance(update.result, dict) and update.result.get("state"):
            store_runtime(self.vm_store, conn, task.resource_id or "", update.result, now)

    def on_power_failure(
        self, conn: Tx, task: TaskRow, error: dict[str, Any], now: datetime
    ) -> None:
        if error.get("code") == "vm_start_failed":
            observed = {"id": task.resource_id, "state": "failed", "detail": error.get("message")}
            store_runtime(self.vm_store, conn, task.resource_id or "", observed, now)


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

"""Moving a stopped VM's disk to another pool on its node (``otherix vm move``, issue 16).

- **Admission** (``move``), in one transaction holding the VM row: the VM must
  be ``stopped`` with its disk made (``vm_not_movable``, ``details.reason``
  ``vm_not_stopped``), its QEMU not running (``vm_running``), no other task of
  it unfinished (``task_in_progress``). The target resolves to one pool
  instance: a UUID names it; a name means its instance on the VM's node, or
  on ``node`` when given (a name with no instance there is a 400 naming the
  nodes it is on, so an operator never moves across nodes by accident). It
  must not be the disk's pool (``same_pool``), must not be cordoned
  (``pool_cordoned``), must be ``ready`` (``pool_failed``) on a ``ready``
  node, and must report room for the disk's allocated bytes
  (``insufficient_space``; checked before anything is copied, and by the agent
  again before it copies). The source pool must be ready too, and the disk
  present (``disk_missing``). A target on another node needs ``node`` (or
  its instance UUID and ``node``), both nodes ``ready`` and both agents with
  a disk transfer endpoint (``transfer_unavailable``).
- **Across nodes**, the source node gets a ``vm.export`` task holding a
  one-time ticket (its agent serves that one disk, to that ticket's secret,
  while the task lives: ``otherix.agent.transfer``) and the target node the
  ``vm.move``, with the source's transfer URL and the ticket; the secret is
  derived from the control plane's key when the target's desired state is
  built (``HeartbeatService._task_args``), never stored. The export task is
  ended with the move, which revokes the ticket; the switch also moves the
  VM to the target node.
- Admitted, the disk row gets ``move_pool_id`` (its agent then declares the
  disk ``incoming`` in the target: never missing, never an orphan; and the
  foreign key keeps both pools from being deleted), the VM goes ``moving``
  with a ``vm.move`` task for its node (``otherix.agent.vmmove``).
- **Success** (the agent copied the disk, compared the sha256 of source and
  copy and published the copy): in the task report's transaction the disk row
  switches to the target pool and path (the one atomic switch), the VM is
  ``stopped`` again, and a ``vm.disk_remove`` task removes the source copy;
  the agent removes it only while the source pool declares no disk of the VM
  and the target copy is there.
- **Failure or cancel**: the disk row keeps its pool, ``move_pool_id`` is
  cleared, the VM is ``stopped`` with ``status.reason: "move_failed"`` and the
  task's error, and a ``vm.disk_remove`` task removes whatever reached the
  target (only while the source copy is there).

So at every instant the store names exactly one complete copy, and a copy it
does not name is removed by a task that checks ownership again on the node.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from otherix.api.clock import Clock
from otherix.api.deps import Principal
from otherix.api.services import secrets, tasks
from otherix.api.services.tasks import TaskService
from otherix.api.services.vms import LIVE_STATES, VmService, vm_not_found
from otherix.api.watch import WatchHub
from otherix.domain.names import looks_like_uuid
from otherix.domain.vms import disk_missing, vm_disk_path
from otherix.errors import NotFound, PoolCordoned, ValidationFailed, VmNotMovable, VmRunning
from otherix.models.common import AsyncTaskAccepted
from otherix.models.heartbeat import TaskUpdate
from otherix.models.vms import VmMoveRequest
from otherix.store import Database, Tx
from otherix.store.ports.nodes import NodeStore
from otherix.store.ports.pools import PoolRow, PoolStore
from otherix.store.ports.tasks import TaskChange, TaskRow, TaskStore
from otherix.store.ports.vms import RootDiskChange, VmChange, VmDiskRow, VmRecord, VmStore

__all__ = ["VM_DISK_REMOVE", "VM_EXPORT", "VM_MOVE", "VmMoveService"]

log = logging.getLogger(__name__)

VM_MOVE: Final = "vm.move"
VM_DISK_REMOVE: Final = "vm.disk_remove"
VM_EXPORT: Final = "vm.export"


def _refuse(reason: str, message: str, **details: Any) -> VmNotMovable:
    return VmNotMovable(message, {"reason": reason, **details})


def _size(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value < 1 << 63 else None


def _transfer_url(capabilities: object) -> str | None:
    """The node's disk transfer endpoint, as its agent reports it (``transfer_url``)."""
    url = capabilities.get("transfer_url") if isinstance(capabilities, dict) else None
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None


def _end(task: TaskRow, key: str) -> dict[str, Any]:
    """The task's ``source`` or ``target`` pool (``{pool_name, pool_path}``)."""
    value = task.args.get(key)
    return dict(value) if isinstance(value, dict) else {}


def _pool_arg(name: str, path: str) -> dict[str, str]:
    return {"pool_name": name, "pool_path": path}


@dataclass(kw_only=True, eq=False)
class VmMoveService:
    """The vm move service, built once by ``api/compose.py``."""

    db: Database
    clock: Clock
    hub: WatchHub
    node_store: NodeStore
    pool_store: PoolStore
    task_store: TaskStore
    vm_store: VmStore
    vm_service: VmService
    task_service: TaskService
    #: the key transfer secrets are derived from (``secrets.transfer_secret``)
    transfer_key: str = ""

    def _target(self, conn: Tx, vm_node: str, body: VmMoveRequest) -> PoolRow:
        """The pool instance ``body`` names (module docstring)."""
        ref = body.pool.strip()
        if looks_like_uuid(ref):
            row = self.pool_store.get_pool(conn, ref.lower())
            if row is None:
                raise NotFound(f"storage pool {ref} not found; see 'otherix pool list'")
            node = body.node or vm_node
            if row.node_name.lower() != node.lower():
                hint = "" if body.node else f" (--node {row.node_name} to move across nodes)"
                raise ValidationFailed(
                    f"pool instance {ref} is on node {row.node_name}, not {node}{hint}",
                    {"field": "node" if body.node else "pool", "nodes": [row.node_name]},
                )
            return row
        rows = self.pool_store.get_pools_by_name(conn, ref)
        if not rows:
            raise NotFound(f"storage pool \"{ref}\" not found; see 'otherix pool list'")
        node = body.node or vm_node
        mine = [r for r in rows if r.node_name.lower() == node.lower()]
        if not mine:
            where = sorted({r.node_name for r in rows})
            hint = "" if body.node else f" ('--node {where[0]}' to move the disk across nodes)"
            raise ValidationFailed(
                f'pool "{ref}" has no instance on node {node}'
                f"{' (the VM' + chr(39) + 's node)' if body.node is None else ''}; "
                f"it is on {', '.join(where)}{hint}",
                {"field": "node" if body.node else "pool", "pool": ref, "nodes": where},
            )
        return mine[0]

    def move(self, principal: Principal, name: str, body: VmMoveRequest) -> AsyncTaskAccepted:
        """Admit the move and make its ``vm.move`` task (202), or answer the same move's
        unfinished task (module docstring)."""
        now = self.clock.now()
        with self.db.write() as conn:
            row = self.vm_service.visible_row(principal, name, conn)
            if self.vm_store.lock_vm(conn, row.id) is None:
                raise NotFound(vm_not_found(name))
            row = self.vm_service.visible_row(principal, name, conn)  # as locked
            disk = next(iter(self.vm_store.disks_for_vm(conn, row.id)), None)
            current = self.task_store.get_task(conn, row.task_id) if row.task_id else None
            unfinished = current is not None and current.status not in tasks.FINAL
            if row.phase == "moving" and current is not None and unfinished:
                if current.type == VM_MOVE and disk is not None:
                    target = self._target(conn, row.node_name or "", body)
                    if disk.move_pool_id == target.id:  # the same move again
                        return AsyncTaskAccepted.model_validate(
                            {**tasks.accepted(current.id).model_dump(), "status": current.status}
                        )
                raise _refuse(
                    "vm_moving",
                    f"VM {row.name} is being moved ({current.id}); wait for it "
                    f"('otherix task wait {current.id}') or cancel it",
                    task_id=current.id,
                )
            if row.phase != "stopped" or disk is None or disk.file_path is None:
                raise _refuse(
                    "vm_not_stopped",
                    f"VM {row.name} is {row.phase}: only a VM whose disk is ready can be moved",
                    phase=row.phase,
                )
            if unfinished and current is not None:
                raise _refuse(
                    "task_in_progress",
                    f"VM {row.name} has a {current.type} task in progress ({current.id}); "
                    f"wait for it ('otherix task wait {current.id}')",
                    task_id=current.id,
                    type=current.type,
                )
            state = (row.runtime or {}).get("state")
            if state in LIVE_STATES:
                raise VmRunning(
                    f"VM {row.name} is {state}: stop it first ('otherix vm stop {row.name}'), "
                    "then move its disk",
                    {"state": state, "hint": f"otherix vm stop {row.name}"},
                )
            target = self._target(conn, row.node_name or "", body)
            self._check(conn, row, disk, target)
            assert row.node_id is not None
            args: dict[str, Any] = {
                "vm_id": row.id,
                "format": disk.format,
                "source": _pool_arg(disk.pool, disk.pool_path),
                "target": _pool_arg(target.name, target.path),
                "source_pool_id": disk.storage_pool_id,
                "target_pool_id": target.id,
                "source_node_id": row.node_id,
                "target_node_id": target.node_id,
            }
            if target.node_id != row.node_id:
                args["transfer"] = self._export(conn, principal, row, disk, now)
            task_id = self.task_service.new_task(
                conn,
                now=now,
                type=VM_MOVE,
                resource_type="vm",
                resource_id=row.id,
                node_id=target.node_id,
                args=args,
                created_by=principal.user_id,
                max_attempts=1,
            )
            self.vm_store.update_root_disk(
                conn, row.id, {"move_pool_id": target.id, "updated_at": now}
            )
            change: VmChange = {
                "phase": "moving",
                "reason": None,
                "message": None,
                "status_details": {"target_pool": target.name, "target_pool_id": target.id},
                "task_id": task_id,
                "updated_at": now,
            }
            self.vm_store.update_vm(conn, row.id, change)
            for node_id in {row.node_id, target.node_id}:
                self.node_store.bump_revision(conn, node_id)
        self.hub.publish(sorted({row.node_id, target.node_id}))
        return tasks.accepted(task_id)

    def _export(
        self, conn: Tx, principal: Principal, row: VmRecord, disk: VmDiskRow, now: datetime
    ) -> dict[str, Any]:
        """The ``vm.export`` task that opens the source node's transfer endpoint to one
        ticket; the transfer args of the target's ``vm.move`` (the secret is added to
        the target's desired state only: ``HeartbeatService._task_args``)."""
        assert row.node_id is not None
        node = self.node_store.get_node(conn, row.node_id)
        ticket = str(uuid.uuid4())
        secret = secrets.transfer_secret(self.transfer_key, ticket)
        export_id = self.task_service.new_task(
            conn,
            now=now,
            type=VM_EXPORT,
            resource_type="vm",
            resource_id=row.id,
            node_id=row.node_id,
            args={
                "vm_id": row.id,
                "format": disk.format,
                **_pool_arg(disk.pool, disk.pool_path),
                "ticket": ticket,
                "token_sha256": secrets.sha256_hex(secret),
            },
            created_by=principal.user_id,
            max_attempts=1,
        )
        url = _transfer_url(node.capabilities if node else None)
        return {"url": url, "ticket": ticket, "export_task_id": export_id}

    def _check(self, conn: Tx, row: VmRecord, disk: VmDiskRow, target: PoolRow) -> None:
        name = row.name
        if target.id == disk.storage_pool_id:
            raise _refuse(
                "same_pool",
                f'VM {name}\'s disk is already on pool "{target.name}" on node {target.node_name}',
                pool=target.name,
            )
        if target.cordoned:
            raise PoolCordoned(
                f'pool "{target.name}" on node {target.node_name} is cordoned: no disk may '
                f"move onto it ('otherix pool uncordon {target.name}' to allow it again)",
                {"field": "pool", "pool": target.name, "node": target.node_name},
            )
        if target.reconciliation_status != "ready":
            raise _refuse(
                "pool_failed",
                f'pool "{target.name}" on node {target.node_name} is '
                f"{target.reconciliation_status} ({target.reconciliation_reason or 'failed'}); "
                f"see 'otherix pool get {target.name}'",
                pool=target.name,
                pool_reason=target.reconciliation_reason,
            )
        nodes = {target.node_id, row.node_id or ""}
        for node_id in sorted(nodes):
            node = self.node_store.get_node(conn, node_id)
            label = node.name if node else node_id
            if node is None or node.status != "ready":
                raise _refuse(
                    "node_unreachable",
                    f"node {label} is {node.status if node else 'gone'}",
                    node=label,
                )
            if len(nodes) > 1 and not _transfer_url(node.capabilities):
                raise _refuse(
                    "transfer_unavailable",
                    f"node {label}'s agent has no disk transfer endpoint (its "
                    "transfer.listen is off, or it could not bind it, or it is older than "
                    "this control plane): a move across nodes needs one on both nodes",
                    node=label,
                )
        missing = disk_missing(disk.file_path, disk.missing_since, disk.pool_status)
        if missing is not None:
            raise _refuse(
                "disk_missing",
                f'VM {name}\'s disk is missing from pool "{disk.pool}" ({missing}): '
                "nothing to move",
                pool=disk.pool,
                cause=missing,
            )
        need = disk.actual_size_bytes or 0
        if need == 0 and disk.virtual_size_bytes:
            need = disk.virtual_size_bytes
        free = target.available_bytes
        if free is None or need > free:
            raise _refuse(
                "insufficient_space",
                f'pool "{target.name}" on node {target.node_name} has '
                f"{'unknown' if free is None else free} bytes free; VM {name}'s disk "
                f"takes {need}",
                pool=target.name,
                needed_bytes=need,
                available_bytes=free,
            )

    # task outcomes (run inside the task update's transaction) ----------------------------

    def _moving_disk(self, conn: Tx, task: TaskRow) -> tuple[VmRecord, VmDiskRow] | None:
        vm = self.vm_store.lock_vm(conn, task.resource_id or "")
        if vm is None or vm.phase != "moving" or vm.task_id != task.id:
            return None
        disk = next(iter(self.vm_store.disks_for_vm(conn, vm.id)), None)
        target_id = task.args.get("target_pool_id")
        if disk is None or disk.move_pool_id is None or disk.move_pool_id != target_id:
            return None
        return vm, disk

    def _remove_task(
        self,
        conn: Tx,
        task: TaskRow,
        vm: VmRecord,
        now: datetime,
        *,
        pool: dict[str, Any],
        keep: dict[str, Any] | None,
        fmt: str,
        node_id: str,
    ) -> str:
        return self.task_service.new_task(
            conn,
            now=now,
            type=VM_DISK_REMOVE,
            resource_type="vm",
            resource_id=vm.id,
            node_id=node_id,
            args={"vm_id": vm.id, "format": fmt, **pool, "keep": keep},
            created_by=task.created_by,
            max_attempts=1,
        )

    def _end_export(self, conn: Tx, task: TaskRow, now: datetime, status: str) -> None:
        """Finish the move's ``vm.export`` task, which revokes its ticket on the source."""
        transfer = task.args.get("transfer")
        export_id = transfer.get("export_task_id") if isinstance(transfer, dict) else None
        if not isinstance(export_id, str):
            return
        values: TaskChange = {"status": status, "finished_at": now}
        if status != "success":
            values["error"] = {"code": "cancelled", "message": "the move ended"}
        self.task_store.update_task(conn, export_id, values, only_if_status=["pending", "running"])

    def _nodes(self, task: TaskRow) -> tuple[str, str]:
        """(source node id, target node id) of a move task."""
        target = str(task.args.get("target_node_id") or task.node_id or "")
        return str(task.args.get("source_node_id") or target), target

    def on_move_success(
        self, conn: Tx, task: TaskRow, update: TaskUpdate, now: datetime
    ) -> list[str]:
        """The switch (module docstring); the nodes to wake once it has committed."""
        found = self._moving_disk(conn, task)
        if found is None:
            log.warning("vm.move %s succeeded for a VM no longer moving there", task.id)
            return []
        vm, disk = found
        target = self.pool_store.get_pool(conn, disk.move_pool_id or "")
        assert target is not None  # the foreign key keeps it while the move runs
        result = update.result or {}
        path = vm_disk_path(target.path, vm.id, disk.format)
        if result.get("file_path") not in (None, path):
            log.warning(
                "vm.move %s reported %s, expected %s", task.id, result.get("file_path"), path
            )
        switch: RootDiskChange = {
            "storage_pool_id": target.id,
            "move_pool_id": None,
            "file_path": path,
            "missing_since": None,
            "updated_at": now,
        }
        if (virtual := _size(result.get("virtual_size_bytes"))) is not None:
            switch["virtual_size_bytes"] = virtual
        if (actual := _size(result.get("disk_size_bytes"))) is not None:
            switch["actual_size_bytes"] = actual
        self.vm_store.update_root_disk(conn, vm.id, switch)
        source_node, target_node = self._nodes(task)
        across = source_node != target_node
        self._end_export(conn, task, now, "success")
        remove_id = self._remove_task(
            conn,
            task,
            vm,
            now,
            pool=_end(task, "source"),
            keep=None if across else _end(task, "target"),  # a kept copy on the same node
            fmt=disk.format,
            node_id=source_node,
        )
        change: VmChange = {
            "phase": "stopped",
            "reason": None,
            "message": None,
            "status_details": None,
            "task_id": remove_id,
            "updated_at": now,
        }
        if across:  # the VM lives where its disk does now
            change["node_id"] = target_node
            self.vm_store.delete_runtimes(conn, [vm.id])
        self.vm_store.update_vm(conn, vm.id, change, phases=["moving"])
        for node_id in {source_node, target_node}:
            self.node_store.bump_revision(conn, node_id)
        return sorted({source_node, target_node})  # published after the commit

    def on_move_failure(
        self, conn: Tx, task: TaskRow, error: dict[str, Any], now: datetime
    ) -> list[str]:
        """The disk stays (module docstring); the nodes to wake once it has committed."""
        found = self._moving_disk(conn, task)
        if found is None:
            return []
        vm, disk = found
        self.vm_store.update_root_disk(conn, vm.id, {"move_pool_id": None, "updated_at": now})
        source_node, target_node = self._nodes(task)
        self._end_export(conn, task, now, "cancelled")
        remove_id = self._remove_task(
            conn,
            task,
            vm,
            now,
            pool=_end(task, "target"),
            keep=_end(task, "source") if source_node == target_node else None,
            fmt=disk.format,
            node_id=target_node,
        )
        code = str(error.get("code") or "internal")[:64]
        change: VmChange = {
            "phase": "stopped",
            "reason": "move_failed",
            "message": f"the move failed ({code}): {error.get('message') or 'no message'}; "
            "the disk stays where it was",
            "status_details": {"code": code, "move_task_id": task.id},
            "task_id": remove_id,
            "updated_at": now,
        }
        self.vm_store.update_vm(conn, vm.id, change, phases=["moving"])
        for node_id in {source_node, target_node}:
            self.node_store.bump_revision(conn, node_id)
        return sorted({source_node, target_node})  # published after the commit

"""Drift of a pool instance (issue 16): ``pool doctor`` and its purge.

The agent scans each ready pool (``otherix.agent.drift``) and reports what it holds
that nobody owns; the heartbeat stores the report in ``pool_status.drift``. Here:

- ``view``: the report as ``pool doctor`` shows it, with the pool's missing VM disks
  (``vm_disks.missing_since``) joined to their VMs, and each item's action. An orphan
  under ``vms/<id>/`` whose ``<id>`` is a VM the control plane knows on this pool (a
  create, delete or import under way that the agent had not seen yet when it scanned)
  is not shown: it is owned.
- ``purge``: a ``storage_pool.drift_purge`` task for the node's agent with the paths
  the operator saw. Each must be in the stored report (anything else is refused with
  ``disk_not_orphan``, so the API never names an arbitrary file for removal); the agent
  then checks each again under the declared state of that moment and keeps what became
  owned. Guarded by ``storage_pool:manage`` (admin), like a pool delete: it removes
  bytes for good.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from otherix.api.clock import Clock
from otherix.api.deps import Principal
from otherix.api.services import tasks
from otherix.api.services.pools import PoolService
from otherix.api.services.scan import SCANNABLE
from otherix.api.services.tasks import TaskService
from otherix.api.watch import WatchHub
from otherix.errors import Conflict, DiskNotOrphan, PoolNotReady
from otherix.models.common import AsyncTaskAccepted
from otherix.models.drift import DriftItemView, PoolDriftView
from otherix.store import Database
from otherix.store.ports import JSONObject
from otherix.store.ports.nodes import NodeStore
from otherix.store.ports.pools import PoolDiskRow, PoolRow, PoolStore

__all__ = ["DRIFT_PURGE", "DriftService", "check_actionable", "stored_items"]

DRIFT_PURGE = "storage_pool.drift_purge"


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def stored_items(drift: JSONObject | None, known_vms: set[str]) -> list[dict[str, Any]]:
    """The items of a stored drift report, less orphans under a VM the control plane
    knows on the pool (``known_vms``, lower-case ids)."""
    raw = drift.get("items") if drift else None
    out: list[dict[str, Any]] = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            continue
        parts = str(item["path"]).split("/")
        if parts[0] == "vms" and len(parts) >= 2 and parts[1].lower() in known_vms:
            continue
        out.append(dict(item))
    return out


def check_actionable(row: PoolRow, verb: str) -> None:
    """The instance's agent can act on it now: node live, pool ready."""
    if row.node_deleted_at is not None:
        raise Conflict("owning node is gone", {"current_status": "gone"})
    if row.node_liveness not in SCANNABLE:
        raise PoolNotReady(
            f"node {row.node_name} is {row.node_liveness}: its agent cannot {verb} now",
            {"current_status": row.node_liveness, "node": row.node_name},
        )
    if row.reconciliation_status != "ready":
        raise PoolNotReady(
            f'pool "{row.name}" on node {row.node_name} is {row.reconciliation_status}: '
            f"its agent cannot {verb} now",
            {"current_status": row.reconciliation_status, "pool": row.name},
        )


def _relative(row: PoolRow, file_path: str | None) -> str | None:
    if not file_path:
        return None
    base = os.path.normpath(row.path)
    path = os.path.normpath(file_path)
    return os.path.relpath(path, base) if path.startswith(base + "/") else path


def _is_disk(item: dict[str, Any]) -> bool:
    name = str(item.get("path", "")).rsplit("/", 1)[-1]
    return item.get("type") == "file" and (
        (item.get("area") == "vms" and name in ("disk.qcow2", "disk.raw"))
        or (item.get("area") == "scratch" and name.startswith("disk-"))  # a clone left over
    )


@dataclass(kw_only=True, eq=False)
class DriftService:
    """The drift service, built once by ``api/compose.py`` with the collaborators below."""

    db: Database
    clock: Clock
    hub: WatchHub
    node_store: NodeStore
    pool_store: PoolStore
    pool_service: PoolService
    task_service: TaskService

    def _read(self, row: PoolRow) -> tuple[JSONObject | None, list[PoolDiskRow]]:
        with self.db.read() as conn:
            return self.pool_store.drift_of(conn, row.id), self.pool_store.disks_on_pool(
                conn, row.id
            )

    def view(self, ref: str) -> PoolDriftView:
        row = self.pool_service.resolve_one(ref)
        drift, disks = self._read(row)
        now = self.clock.now()
        where = f"{row.name} --node {row.node_name}"
        items: list[DriftItemView] = []
        for d in disks:
            if d.missing_since is None:
                continue
            items.append(
                DriftItemView(
                    kind="missing",
                    area="vms",
                    path=_relative(row, d.file_path) or f"vms/{d.vm_id}",
                    vm=d.vm_name,
                    vm_id=d.vm_id,
                    action=f"restore the file, or delete the VM: otherix vm delete {d.vm_name}",
                )
            )
        for item in stored_items(drift, {d.vm_id.lower() for d in disks}):
            modified = _when(item.get("modified_at"))
            importable = _is_disk(item)
            purge = f"otherix pool doctor {where} --purge"
            action = (
                f"otherix vm import NAME --pool {where} --disk {item['path']}, or {purge}"
                if importable
                else purge
            )
            items.append(
                DriftItemView.model_validate(
                    {
                        **{k: item.get(k) for k in ("kind", "area", "path", "type", "size_bytes")},
                        "modified_at": modified,
                        "age_seconds": int((now - modified).total_seconds()) if modified else None,
                        "importable": importable,
                        "action": action,
                    }
                )
            )
        more = drift.get("more") if drift else 0
        return PoolDriftView(
            pool=row.name,
            pool_id=row.id,
            node=row.node_name,
            path=row.path,
            reported=drift is not None,
            items=items,
            more=more if isinstance(more, int) else 0,
        )

    def purge(self, principal: Principal, ref: str, paths: list[str]) -> AsyncTaskAccepted:
        row = self.pool_service.resolve_one(ref)
        check_actionable(row, "purge")
        drift, disks = self._read(row)
        known = {str(i["path"]) for i in stored_items(drift, {d.vm_id.lower() for d in disks})}
        unknown = [p for p in dict.fromkeys(paths) if p not in known]
        if unknown:
            raise DiskNotOrphan(
                f"not an orphan or stray of pool {row.name!r} on node {row.node_name} in its "
                f"agent's last report: {', '.join(unknown[:5])}; see 'otherix pool doctor "
                f"{row.name} --node {row.node_name}'",
                {"paths": unknown[:50], "pool": row.name, "node": row.node_name},
            )
        with self.db.write() as conn:
            task_id = self.task_service.new_task(
                conn,
                now=self.clock.now(),
                type=DRIFT_PURGE,
                resource_type="storage_pool",
                resource_id=row.id,
                node_id=row.node_id,
                args={"pool": row.name, "path": row.path, "paths": list(dict.fromkeys(paths))},
                created_by=principal.user_id,
                max_attempts=1,
            )
            self.node_store.bump_revision(conn, row.node_id)
        self.hub.publish([row.node_id])
        return tasks.accepted(task_id)

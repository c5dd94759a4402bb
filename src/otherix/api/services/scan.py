"""``storage_pool.scan``: ask the owning node to measure the pool now.

The scan task is delivered to the agent in its desired state; when the agent
reports success, ``apply_scan_result`` stores capacity and available bytes
and runs the disk-pressure transition (docs/pool-contract.md §9). An older design also ran
a periodic 15-minute scan trigger; here the agent re-measures every pool on
each reconcile pass and reports changes on its own, so no periodic trigger
is needed (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from otherix.api.clock import Clock
from otherix.api.deps import Principal
from otherix.api.services import tasks
from otherix.api.services.heartbeat import HeartbeatService
from otherix.api.services.pools import PoolService
from otherix.api.services.tasks import TaskService
from otherix.api.watch import WatchHub
from otherix.domain.pressure import PressureState, next_pressure
from otherix.errors import Conflict
from otherix.models.common import AsyncTaskAccepted
from otherix.models.heartbeat import TaskUpdate
from otherix.store import Database, Tx
from otherix.store.ports.nodes import NodeStore
from otherix.store.ports.pools import PoolStore
from otherix.store.ports.tasks import TaskRow

SCANNABLE = ("pending", "ready")
TYPE = "storage_pool.scan"


@dataclass(kw_only=True, eq=False)
class ScanService:
    """The scan service, built once by ``api/compose.py`` with the collaborators below."""

    db: Database
    clock: Clock
    hub: WatchHub
    node_store: NodeStore
    pool_store: PoolStore
    heartbeat_service: HeartbeatService
    pool_service: PoolService
    task_service: TaskService

    def request_scan(self, principal: Principal, ref: str) -> AsyncTaskAccepted:
        pool = self.pool_service.resolve_one(ref)
        if pool.node_deleted_at is not None:
            raise Conflict("owning node is gone", {"current_status": "gone"})
        if pool.node_liveness not in SCANNABLE:
            raise Conflict(
                "node is not in a scannable state", {"current_status": pool.node_liveness}
            )
        with self.db.write() as conn:
            task_id = self.task_service.new_task(
                conn,
                now=self.clock.now(),
                type=TYPE,
                resource_type="storage_pool",
                resource_id=pool.id,
                node_id=pool.node_id,
                args={"pool": pool.name, "path": pool.path},
                created_by=principal.user_id,
            )
            self.node_store.bump_revision(conn, pool.node_id)
        self.hub.publish([pool.node_id])
        return tasks.accepted(task_id)

    def apply_scan_result(self, conn: Tx, task: TaskRow, update: TaskUpdate, now: datetime) -> None:
        result = update.result or {}
        capacity, available = result.get("capacity_bytes"), result.get("available_bytes")
        if not isinstance(capacity, int) or not isinstance(available, int):
            return
        row = self.pool_store.get_pool(conn, task.resource_id or "")
        if row is None:
            return
        state, _ = next_pressure(
            PressureState(row.pressure_since, row.pressure_count),
            available,
            capacity,
            self.heartbeat_service.pressure_config(),
            now,
        )
        self.pool_store.update_status(
            conn,
            row.id,
            {
                "capacity_bytes": capacity,
                "available_bytes": available,
                "reported_at": now,
                "pressure_since": state.since,
                "pressure_count": state.consecutive_count,
            },
        )

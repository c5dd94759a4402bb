"""``storage_pool.scan``: ask the owning node to measure the pool now.

The scan task is delivered to the agent in its desired state; when the agent
reports success, ``apply_scan_result`` stores capacity and available bytes
and runs the disk-pressure transition (docs/pool-contract.md §9). An older design also ran
a periodic 15-minute scan trigger; here the agent re-measures every pool on
each reconcile pass and reports changes on its own, so no periodic trigger
is needed (docs/architecture.md).
"""

from __future__ import annotations

from datetime import datetime

from otherix.api.deps import Deps, Principal
from otherix.api.services import tasks
from otherix.api.services.heartbeat import pressure_config
from otherix.api.services.pools import resolve_one
from otherix.domain.pressure import PressureState, next_pressure
from otherix.errors import Conflict
from otherix.models.common import AsyncTaskAccepted
from otherix.models.heartbeat import TaskUpdate
from otherix.store import Tx
from otherix.store.nodes import store as qn
from otherix.store.pools import store as qp
from otherix.store.ports.tasks import TaskRow

SCANNABLE = ("pending", "ready")
TYPE = "storage_pool.scan"


def request_scan(deps: Deps, principal: Principal, ref: str) -> AsyncTaskAccepted:
    pool = resolve_one(deps, ref)
    if pool.node_deleted_at is not None:
        raise Conflict("owning node is gone", {"current_status": "gone"})
    if pool.node_liveness not in SCANNABLE:
        raise Conflict("node is not in a scannable state", {"current_status": pool.node_liveness})
    with deps.db.write() as conn:
        task_id = tasks.new_task(
            conn,
            now=deps.clock.now(),
            type=TYPE,
            resource_type="storage_pool",
            resource_id=pool.id,
            node_id=pool.node_id,
            args={"pool": pool.name, "path": pool.path},
            created_by=principal.user_id,
        )
        qn.bump_revision(conn, pool.node_id)
    deps.hub.publish([pool.node_id])
    return tasks.accepted(task_id)


def apply_scan_result(
    conn: Tx, deps: Deps, task: TaskRow, update: TaskUpdate, now: datetime
) -> None:
    result = update.result or {}
    capacity, available = result.get("capacity_bytes"), result.get("available_bytes")
    if not isinstance(capacity, int) or not isinstance(available, int):
        return
    row = qp.get_pool(conn, task.resource_id or "")
    if row is None:
        return
    state, _ = next_pressure(
        PressureState(row.pressure_since, row.pressure_count),
        available,
        capacity,
        pressure_config(deps),
        now,
    )
    qp.update_status(
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


tasks.RESULT_HANDLERS[TYPE] = apply_scan_result

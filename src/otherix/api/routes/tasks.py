"""``/v1/tasks``, the pool scan trigger, and the agent's task reports."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from otherix.api.deps import Deps, Principal
from otherix.api.guards import AgentCredential, agent_node, require
from otherix.api.provide import get_deps
from otherix.api.routes.common import limit_param, page
from otherix.api.services import nodes, scan, tasks
from otherix.errors import ValidationFailed
from otherix.models.common import AsyncTaskAccepted, Page
from otherix.models.heartbeat import TaskUpdate
from otherix.models.tasks import Task
from otherix.rbac import Permission

router = APIRouter(tags=["tasks"])

READ = require(Permission.TASK_READ)
CANCEL = require(Permission.TASK_CANCEL)
SCAN = require(Permission.STORAGE_POOL_SCAN)
STATUSES = ("pending", "running", "success", "failed", "cancelled")


@router.get("/v1/tasks", operation_id="listTasks", response_model=Page[Task])
def list_tasks(
    limit: int | None = None,
    cursor: str | None = None,
    status: str | None = None,
    type: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    deps: Deps = Depends(get_deps),
    me: Principal = Depends(READ),
) -> dict[str, Any]:
    if status is not None and status not in STATUSES:
        raise ValidationFailed(f"invalid status {status!r}", {"field": "status"})
    filters = {
        k: v
        for k, v in {
            "status": status,
            "type": type,
            "resource_type": resource_type,
            "resource_id": resource_id,
        }.items()
        if v is not None
    }
    data, nxt = tasks.list_tasks(deps, me, limit=limit_param(limit), cursor=cursor, filters=filters)
    return page(data, nxt)


@router.get("/v1/tasks/{task_id}", operation_id="getTask")
def get_task(task_id: str, deps: Deps = Depends(get_deps), me: Principal = Depends(READ)) -> Task:
    return tasks.get(deps, me, task_id)


@router.post("/v1/tasks/{task_id}/cancel", operation_id="cancelTask")
def cancel_task(
    task_id: str, deps: Deps = Depends(get_deps), me: Principal = Depends(CANCEL)
) -> Task:
    return tasks.cancel(deps, me, task_id)


@router.post("/v1/storage-pools/{id}/scan", operation_id="scanStoragePool", status_code=202)
def scan_pool(
    id: str,
    deps: Deps = Depends(get_deps),
    me: Principal = Depends(SCAN),
) -> AsyncTaskAccepted:
    return scan.request_scan(deps, me, id)


@router.post("/v1/nodes/{name}/tasks/{task_id}", operation_id="nodeTaskUpdate")
def agent_task_update(
    name: str,
    task_id: str,
    update: TaskUpdate,
    deps: Deps = Depends(get_deps),
    cred: AgentCredential = Depends(agent_node),
) -> Task:
    ident = nodes.authenticate_agent(deps, cred.token)
    nodes.bind_agent(ident, name)
    return tasks.agent_update(deps, ident, task_id, update)

"""``/v1/tasks``, the pool scan trigger, and the agent's task reports."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from otherix.api.deps import Principal
from otherix.api.guards import AgentCredential, agent_node, require
from otherix.api.provide import get_node_service, get_scan_service, get_task_service
from otherix.api.routes.common import limit_param, page
from otherix.api.services import nodes
from otherix.api.services.nodes import NodeService
from otherix.api.services.scan import ScanService
from otherix.api.services.tasks import TaskService
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
    me: Principal = Depends(READ),
    task_service: TaskService = Depends(get_task_service),
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
    data, nxt = task_service.list_tasks(
        me, limit=limit_param(limit), cursor=cursor, filters=filters
    )
    return page(data, nxt)


@router.get("/v1/tasks/{task_id}", operation_id="getTask")
def get_task(
    task_id: str,
    me: Principal = Depends(READ),
    task_service: TaskService = Depends(get_task_service),
) -> Task:
    return task_service.get(me, task_id)


@router.post("/v1/tasks/{task_id}/cancel", operation_id="cancelTask")
def cancel_task(
    task_id: str,
    me: Principal = Depends(CANCEL),
    task_service: TaskService = Depends(get_task_service),
) -> Task:
    return task_service.cancel(me, task_id)


@router.post("/v1/storage-pools/{id}/scan", operation_id="scanStoragePool", status_code=202)
def scan_pool(
    id: str, me: Principal = Depends(SCAN), scan_service: ScanService = Depends(get_scan_service)
) -> AsyncTaskAccepted:
    return scan_service.request_scan(me, id)


@router.post("/v1/nodes/{name}/tasks/{task_id}", operation_id="nodeTaskUpdate")
def agent_task_update(
    name: str,
    task_id: str,
    update: TaskUpdate,
    cred: AgentCredential = Depends(agent_node),
    node_service: NodeService = Depends(get_node_service),
    task_service: TaskService = Depends(get_task_service),
) -> Task:
    ident = node_service.authenticate_agent(cred.token)
    nodes.bind_agent(ident, name)
    return task_service.agent_update(ident, task_id, update)

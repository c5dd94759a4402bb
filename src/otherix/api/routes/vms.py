"""``/v1/vms`` (docs/pool-contract.md §7): admission, list, get by name, asynchronous delete,
the power verbs (``POST /v1/vms/{name}/{start|stop|restart|poweroff}``, each a
``vm.<verb>`` task, docs/vm-runtime.md), the move of a stopped VM's disk to another
pool (``POST /v1/vms/{name}/move``, a ``vm.move`` task) and the serial console's last
lines.

VMs are addressed by name only (a UUID in ``{name}`` is a 400). Placement
happens after admission (``services.placement``, the scheduler worker).
``POST ?dry_run=true`` answers 200 with the VM admission would make, writing
nothing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse

from otherix.api.deps import Principal
from otherix.api.guards import require
from otherix.api.provide import get_move_service, get_vm_service
from otherix.api.routes.common import DRY_RUN_DESCRIPTION, dry_run_answer, limit_param, page
from otherix.api.services.vmmove import VmMoveService
from otherix.api.services.vms import VmService
from otherix.domain.vms import PHASES, POWER_ACTIONS, PowerAction
from otherix.errors import ValidationFailed
from otherix.models.common import AsyncTaskAccepted
from otherix.models.vms import VM, VmConsole, VMCreate, VMList, VmMoveRequest, VmPowerRequest
from otherix.rbac import Permission

router = APIRouter(prefix="/v1/vms", tags=["vms"])

READ = require(Permission.VM_READ)
CREATE = require(Permission.VM_CREATE)
DELETE = require(Permission.VM_DELETE)
POWER = require(Permission.VM_UPDATE)
#: moving a disk between pools is storage maintenance: admins and operators
MOVE = require(Permission.NODE_MAINTENANCE)


@router.post(
    "", operation_id="createVm", status_code=201, responses={200: dry_run_answer("VM", VM)}
)
def create_vm(
    body: VMCreate,
    response: Response,
    dry_run: bool = Query(False, description=DRY_RUN_DESCRIPTION),
    me: Principal = Depends(CREATE),
    vm_service: VmService = Depends(get_vm_service),
) -> VM:
    """Admit a VM (phase ``pending``); it is placed on a pool instance afterwards.

    ``?dry_run=true``: 200 with the VM as admission (and its first placement
    attempt) would answer, and nothing written."""
    vm = vm_service.create(me, body, dry_run=dry_run)
    if dry_run:
        response.status_code = 200
    return vm


@router.get("", operation_id="listVms", response_model=VMList)
def list_vms(
    limit: int | None = None,
    cursor: str | None = None,
    pool: str | None = None,
    node: str | None = None,
    status: str | None = None,
    me: Principal = Depends(READ),
    vm_service: VmService = Depends(get_vm_service),
) -> dict[str, Any]:
    """``pool``: a pool name or instance UUID; ``node``: a node name or UUID;
    ``status``: a phase. Developers see only their own VMs."""
    if status is not None and status not in PHASES:
        raise ValidationFailed(f"invalid status {status!r}", {"field": "status"})
    data, nxt = vm_service.list_vms(
        me, limit=limit_param(limit), cursor=cursor, pool=pool, node=node, status=status
    )
    return page(data, nxt)


@router.get("/{name}", operation_id="getVm")
def get_vm(
    name: str, me: Principal = Depends(READ), vm_service: VmService = Depends(get_vm_service)
) -> VM:
    """The VM with its disks (``file_path`` for admins and operators only)."""
    return vm_service.get(me, name)


@router.delete(
    "/{name}",
    operation_id="deleteVm",
    status_code=202,
    response_model=AsyncTaskAccepted,
    responses={204: {"description": "the VM was not placed yet and is gone"}},
)
def delete_vm(
    name: str,
    force: bool = Query(
        False, description="delete a VM whose QEMU runs: its agent powers it off first"
    ),
    me: Principal = Depends(DELETE),
    vm_service: VmService = Depends(get_vm_service),
) -> Response:
    """204 when the VM was never placed; else 202 with the ``vm.delete`` task. A VM
    whose QEMU runs is refused (409 ``vm_running``) unless ``force``."""
    accepted = vm_service.delete(me, name, force=force)
    if accepted is None:
        return Response(status_code=204)
    return JSONResponse(accepted.model_dump(mode="json"), status_code=202)


_POWER_DOC = {
    "start": "Start the VM's QEMU on its node (desired power state running).",
    "stop": "ACPI power-down; power off after timeout_seconds (desired power state stopped).",
    "restart": "Stop (as stop does), then start again.",
    "poweroff": "Power off at once, no guest shutdown (desired power state stopped).",
}


def _power_route(action: PowerAction) -> None:
    def power_vm(
        name: str,
        body: VmPowerRequest | None = None,
        me: Principal = Depends(POWER),
        vm_service: VmService = Depends(get_vm_service),
    ) -> AsyncTaskAccepted:
        timeout = body.timeout_seconds if body is not None else 60
        return vm_service.power(me, name, action, timeout=timeout)

    power_vm.__doc__ = (
        f"{_POWER_DOC[action]} 202 with the ``vm.{action}`` task (owners and admins). "
        "The same verb while its task is unfinished answers that task."
    )
    router.add_api_route(
        f"/{{name}}/{action}",
        power_vm,
        methods=["POST"],
        operation_id=f"{action}Vm",
        status_code=202,
        response_model=AsyncTaskAccepted,
        summary=f"{action.capitalize()} a VM",
    )


for _action in POWER_ACTIONS:
    _power_route(_action)


@router.get("/{name}/console", operation_id="getVmConsole")
def get_vm_console(
    name: str, me: Principal = Depends(READ), vm_service: VmService = Depends(get_vm_service)
) -> VmConsole:
    """The last lines of the VM's serial console, as its node last reported them
    (``observed_at``; the agent sends its last 50)."""
    return vm_service.console(me, name)


@router.post(
    "/{name}/move",
    operation_id="moveVm",
    status_code=202,
    response_model=AsyncTaskAccepted,
    summary="Move a stopped VM's disk to another pool",
)
def move_vm(
    name: str,
    body: VmMoveRequest,
    me: Principal = Depends(MOVE),
    move_service: VmMoveService = Depends(get_move_service),
) -> AsyncTaskAccepted:
    """202 with the ``vm.move`` task (admins and operators). The VM must be stopped;
    the target must be another pool instance on its node that is ready, not cordoned
    and has room for the disk (409 ``vm_not_movable`` with ``details.reason``,
    ``pool_cordoned``, ``vm_running``). The disk is copied (reflink where it can),
    the sha256 of both compared, the store switched in one transaction, and the
    source removed after. The same move while its task is unfinished answers it."""
    return move_service.move(me, name, body)

"""Drift (issue 16): ``/v1/storage-pools/{id}/drift`` (``pool doctor`` and its purge) and
``POST /v1/vms/import`` (``vm import``). ``{id}`` is an instance UUID or a name with
one instance. Thin: each route parses, authorises and calls one service.

RBAC (docs/rbac.md): reading the drift shows host paths, so it needs
``storage_pool:scan`` (admin, operator), like a scan; a purge removes bytes for good
and an import takes a host file into a VM, so both need ``storage_pool:manage``
(admin), the permission of a pool delete.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from otherix.api.deps import Principal
from otherix.api.guards import require
from otherix.api.provide import get_drift_service, get_vm_import_service
from otherix.api.services.drift import DriftService
from otherix.api.services.vmimport import VmImportService
from otherix.models.common import AsyncTaskAccepted
from otherix.models.drift import DriftPurge, PoolDriftView, VmImport
from otherix.models.vms import VM
from otherix.rbac import Permission

router = APIRouter(tags=["storage-pools"])

#: the drift names host paths: admin and operator, like a scan
READ = require(Permission.STORAGE_POOL_SCAN)
#: a purge deletes for good, an import adopts a host file: admin, like a pool delete
MANAGE = require(Permission.STORAGE_POOL_MANAGE)


@router.get(
    "/v1/storage-pools/{id}/drift", operation_id="getPoolDrift", dependencies=[Depends(READ)]
)
def get_drift(id: str, drift_service: DriftService = Depends(get_drift_service)) -> PoolDriftView:
    """What the instance holds that nobody owns (orphans in ``vms/``, strays in
    ``images/`` and ``scratch/``, as its agent last scanned them) and the VM disks it
    should hold but does not (missing), each with the action to take."""
    return drift_service.view(id)


@router.post("/v1/storage-pools/{id}/drift/purge", operation_id="purgePoolDrift", status_code=202)
def purge_drift(
    id: str,
    body: DriftPurge,
    me: Principal = Depends(MANAGE),
    drift_service: DriftService = Depends(get_drift_service),
) -> AsyncTaskAccepted:
    """Remove these orphans and strays (each must be in the last drift report); a
    ``storage_pool.drift_purge`` task in which the agent checks each path again and
    keeps what became owned. Result ``{removed: [{path, size_bytes}], kept: [{path,
    reason}], bytes}``."""
    return drift_service.purge(me, id, body.paths)


@router.post("/v1/vms/import", operation_id="importVm", status_code=201, tags=["vms"])
def import_vm(
    body: VmImport,
    me: Principal = Depends(MANAGE),
    service: VmImportService = Depends(get_vm_import_service),
) -> VM:
    """Adopt an orphan disk of a pool instance as a new VM (phase ``creating`` until the
    agent's ``vm.import`` task has renamed it into the VM's directory, then
    ``stopped``); ``status.task_id`` is that task."""
    return service.import_vm(me, body)

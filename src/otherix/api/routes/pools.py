"""``/v1/storage-pools`` (docs/pool-contract.md §4). ``{id}`` is a UUID or a pool name.

``POST ?dry_run=true`` answers 200 with the pool that would be created after
every check a create makes, and writes nothing (``PoolService.create``).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from otherix.api.guards import require
from otherix.api.provide import get_pool_service, get_reinit_service
from otherix.api.routes.common import (
    DRY_RUN_DESCRIPTION,
    dry_run_answer,
    json_body,
    limit_param,
    page,
)
from otherix.api.services import pools
from otherix.api.services.poolreinit import PoolReinitService
from otherix.api.services.pools import PoolService
from otherix.models.pools import PoolConceptView, PoolCreate, PoolList, PoolUpdate, StoragePool
from otherix.rbac import Permission

router = APIRouter(prefix="/v1/storage-pools", tags=["storage-pools"])

READ = require(Permission.STORAGE_POOL_READ)
MANAGE = require(Permission.STORAGE_POOL_MANAGE)


def _body_schema(model: type[Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


@router.get(
    "", operation_id="listStoragePools", response_model=PoolList, dependencies=[Depends(READ)]
)
def list_pools(
    limit: int | None = None,
    cursor: str | None = None,
    node: str | None = None,
    type: str | None = None,
    pool_service: PoolService = Depends(get_pool_service),
) -> dict[str, Any]:
    data, nxt = pool_service.list_pools(
        limit=limit_param(limit), cursor=cursor, node=node, pool_type=type
    )
    return page(data, nxt)


@router.post(
    "",
    operation_id="createStoragePool",
    status_code=201,
    dependencies=[Depends(MANAGE)],
    openapi_extra=_body_schema(PoolCreate),
    responses={200: dry_run_answer("pool", StoragePool)},
)
async def create_pool(
    request: Request,
    response: Response,
    dry_run: bool = Query(False, description=DRY_RUN_DESCRIPTION),
    pool_service: PoolService = Depends(get_pool_service),
) -> StoragePool:
    body = pools.parse_create(await json_body(request))
    pool = await run_in_threadpool(partial(pool_service.create, dry_run=dry_run), body)
    if dry_run:
        response.status_code = 200
    return pool


@router.get(
    "/{id}",
    operation_id="getStoragePool",
    response_model=StoragePool | PoolConceptView,
    dependencies=[Depends(READ)],
)
def get_pool(
    id: str, pool_service: PoolService = Depends(get_pool_service)
) -> StoragePool | PoolConceptView:
    return pool_service.get(id)


@router.patch(
    "/{id}",
    operation_id="updateStoragePool",
    dependencies=[Depends(MANAGE)],
    openapi_extra=_body_schema(PoolUpdate),
)
async def update_pool(
    id: str, request: Request, pool_service: PoolService = Depends(get_pool_service)
) -> StoragePool:
    patch = pools.parse_update(await json_body(request))
    return await run_in_threadpool(pool_service.update, id, patch)


@router.delete(
    "/{id}", operation_id="deleteStoragePool", status_code=204, dependencies=[Depends(MANAGE)]
)
def delete_pool(id: str, pool_service: PoolService = Depends(get_pool_service)) -> Response:
    pool_service.delete(id)
    return Response(status_code=204)


@router.post(
    "/{id}/reinit",
    operation_id="reinitStoragePool",
    response_model=StoragePool,
    dependencies=[Depends(MANAGE)],
)
def reinit_pool(
    id: str, reinit_service: PoolReinitService = Depends(get_reinit_service)
) -> StoragePool:
    """Start a pool whose identity check failed afresh: a new identity marker on its node.

    Refused (409) while VM disks reference the pool, and for a pool that is
    not failed with pool_missing, pool_identity_mismatch or pool_device_changed.
    """
    return reinit_service.reinit(id)


@router.post("/{id}/cordon", operation_id="cordonStoragePool", dependencies=[Depends(MANAGE)])
def cordon_pool(id: str, pool_service: PoolService = Depends(get_pool_service)) -> StoragePool:
    """Placement skips this instance from now on (its VMs stay); a VM that names the
    pool is refused with ``pool_cordoned`` when every instance is cordoned."""
    return pool_service.set_cordon(id, True)


@router.post("/{id}/uncordon", operation_id="uncordonStoragePool", dependencies=[Depends(MANAGE)])
def uncordon_pool(id: str, pool_service: PoolService = Depends(get_pool_service)) -> StoragePool:
    """Placement may use this instance again."""
    return pool_service.set_cordon(id, False)

"""``/v1/cluster/default-pool`` (docs/pool-contract.md §5)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from otherix.api.guards import require
from otherix.api.provide import get_default_pool_service
from otherix.api.services.defaultpool import DefaultPoolService
from otherix.models.pools import DefaultPool, DefaultPoolSet
from otherix.rbac import Permission

router = APIRouter(prefix="/v1/cluster", tags=["cluster"])

READ = require(Permission.CLUSTER_READ)
MANAGE = require(Permission.CLUSTER_MANAGE)


@router.get("/default-pool", operation_id="getDefaultPool", dependencies=[Depends(READ)])
def get_default_pool(
    default_pool_service: DefaultPoolService = Depends(get_default_pool_service),
) -> DefaultPool:
    return default_pool_service.get()


@router.put("/default-pool", operation_id="setDefaultPool", dependencies=[Depends(MANAGE)])
def set_default_pool(
    body: DefaultPoolSet,
    default_pool_service: DefaultPoolService = Depends(get_default_pool_service),
) -> DefaultPool:
    return default_pool_service.put(body.name)


@router.delete(
    "/default-pool",
    operation_id="unsetDefaultPool",
    status_code=204,
    dependencies=[Depends(MANAGE)],
)
def unset_default_pool(
    default_pool_service: DefaultPoolService = Depends(get_default_pool_service),
) -> Response:
    default_pool_service.clear()
    return Response(status_code=204)

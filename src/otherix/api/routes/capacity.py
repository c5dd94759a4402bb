"""``/v1/storage-pools/{id}/capacity-history`` (issue 16.6): a pool instance's samples
of used bytes and its trend, for the web console's graph. ``{id}`` is an instance
UUID or a name with one instance (as the cache routes); readable by every role that
may read the pool."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query

from otherix.api.guards import require
from otherix.api.provide import get_capacity_service
from otherix.api.services.capacity import HISTORY_LIMIT, HISTORY_MAX, CapacityService
from otherix.models.pools import PoolCapacityHistory
from otherix.rbac import Permission

router = APIRouter(prefix="/v1/storage-pools", tags=["storage-pools"])

READ = require(Permission.STORAGE_POOL_READ)


@router.get(
    "/{id}/capacity-history",
    operation_id="getPoolCapacityHistory",
    response_model=PoolCapacityHistory,
    dependencies=[Depends(READ)],
)
def capacity_history(
    id: str,
    since: datetime | None = Query(
        None, description="only samples at or after this time (RFC 3339, with a zone)"
    ),
    limit: int | None = Query(
        None,
        description=f"samples in the answer, oldest first (default {HISTORY_LIMIT}, "
        f"at most {HISTORY_MAX}); next_since says where to go on",
    ),
    capacity_service: CapacityService = Depends(get_capacity_service),
) -> PoolCapacityHistory:
    """The instance's capacity samples (one per ``capacity.sample_interval``, kept for
    ``capacity.retention``), oldest first, with its trend and estimated time to full."""
    return capacity_service.history(id, since=since, limit=limit)

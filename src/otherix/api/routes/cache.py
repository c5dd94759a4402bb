"""``/v1/storage-pools/{id}/cache`` (docs/pool-contract.md §10.3): a pool instance's image
cache, its pins, prune, scrub, and clearing its quarantine. ``{id}`` is an instance UUID
or a name with one instance."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from otherix.api.deps import Principal
from otherix.api.guards import require
from otherix.api.provide import get_cache_service
from otherix.api.services.cache import CacheService
from otherix.models.common import AsyncTaskAccepted
from otherix.models.pools import PoolCacheView
from otherix.rbac import Permission

router = APIRouter(prefix="/v1/storage-pools", tags=["storage-pools"])

READ = require(Permission.STORAGE_POOL_READ)
MANAGE = require(Permission.STORAGE_POOL_MANAGE)
#: a scrub reads every entry and only moves damaged ones aside: guarded like a scan
SCRUB = require(Permission.STORAGE_POOL_SCAN)


@router.get("/{id}/cache", operation_id="getPoolCache", dependencies=[Depends(READ)])
def get_cache(id: str, cache_service: CacheService = Depends(get_cache_service)) -> PoolCacheView:
    """The instance's cached images as its agent last reported them: size, last use,
    pinned, and the VMs whose disk was made from each."""
    return cache_service.cache_view(id)


@router.put("/{id}/cache/pins/{image}", operation_id="pinPoolImage", dependencies=[Depends(MANAGE)])
def pin_image(
    id: str, image: str, cache_service: CacheService = Depends(get_cache_service)
) -> PoolCacheView:
    """Never evict ``image`` from this instance's cache (``config.cache.pinned``); 404
    when the image is not in the cache."""
    return cache_service.pin(id, image)


@router.delete(
    "/{id}/cache/pins/{image}", operation_id="unpinPoolImage", dependencies=[Depends(MANAGE)]
)
def unpin_image(
    id: str, image: str, cache_service: CacheService = Depends(get_cache_service)
) -> PoolCacheView:
    """Let ``image`` be evicted again (nothing happens if it was not pinned)."""
    return cache_service.unpin(id, image)


@router.post("/{id}/cache/prune", operation_id="prunePoolCache", status_code=202)
def prune_cache(
    id: str,
    dry_run: bool = Query(False, description="list what would be evicted, remove nothing"),
    me: Principal = Depends(MANAGE),
    cache_service: CacheService = Depends(get_cache_service),
) -> AsyncTaskAccepted:
    """Evict now every entry that may go (not pinned, not a running VM's image nor a
    disk's backing file, unused for ``cache.min_age``), whatever the limits: a
    ``storage_pool.cache_prune`` task whose result lists them."""
    return cache_service.prune(me, id, dry_run=dry_run)


@router.post("/{id}/cache/quarantine/clear", operation_id="clearPoolQuarantine", status_code=202)
def clear_quarantine(
    id: str,
    image: list[str] = Query(
        [], description="image names whose quarantined entries go; none: every one"
    ),
    me: Principal = Depends(MANAGE),
    cache_service: CacheService = Depends(get_cache_service),
) -> AsyncTaskAccepted:
    """Delete the instance's quarantined cache entries (what a scrub moved to
    ``quarantine/``, listed in the view's ``scrub.quarantined``) of the images named,
    or all of them: a ``storage_pool.quarantine_clear`` task whose result lists them."""
    return cache_service.clear_quarantine(me, id, image)


@router.post("/{id}/scrub", operation_id="scrubStoragePool", status_code=202)
def scrub_pool(
    id: str,
    me: Principal = Depends(SCRUB),
    cache_service: CacheService = Depends(get_cache_service),
) -> AsyncTaskAccepted:
    """Re-hash every cache entry of the instance now against its sidecar, at the pool's
    ``scrub.max_bytes_per_second``; a mismatch is moved to ``quarantine/`` (never
    deleted, never used again). A ``storage_pool.scrub`` task with progress ``{bytes_done,
    bytes_total}`` and result ``{entries, bytes, quarantined}``."""
    return cache_service.scrub(me, id)

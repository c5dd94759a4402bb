"""A pool instance's image cache: its entries, pins and prune (docs/pool-contract.md §10.3).

The agent evicts by the pool's ``config.cache`` (``otherix.domain.cache``) and reports
every eviction (node events ``image_evicted``, ``services.heartbeat``). Here:

- ``cache_view``: the entries the agent last reported for the instance (name, size,
  imported, last used), whether each is pinned, and the VMs whose disk was made from it;
- ``pin`` / ``unpin``: add an image to, or remove it from, ``config.cache.pinned`` (a
  pool update, so the agent has it with its next desired state). Pinning an image that
  is not in the cache is a 404: a pin protects bytes that are there, it does not fetch;
- ``prune``: a ``storage_pool.cache_prune`` task for the node's agent, which evicts
  every entry that may go whatever the limits (``dry_run``: only lists them). Its result
  is the list; the evictions also arrive as events;
- ``scrub``: a ``storage_pool.scrub`` task for the node's agent, which re-hashes every
  entry now (progress ``{bytes_done, bytes_total}``) and quarantines mismatches (result
  ``{entries, bytes, quarantined}``; each also arrives as an ``image_quarantined`` event).
  It can be cancelled while pending or running (``api/compose.py``): the agent stops it
  at its next chunk;
- ``clear_quarantine``: a ``storage_pool.quarantine_clear`` task for the node's agent,
  which deletes the quarantined entries of the image names given (all when none), after
  the operator looked at them; result ``{cleared: [...]}``, and the next report no
  longer lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from otherix.api.clock import Clock
from otherix.api.deps import Principal
from otherix.api.services import tasks
from otherix.api.services.pools import PoolPatch, PoolService
from otherix.api.services.scan import SCANNABLE
from otherix.api.services.tasks import TaskService
from otherix.api.watch import WatchHub
from otherix.domain.cache import CacheConfigError, CachePolicy, parse_cache_config
from otherix.errors import Conflict, NotFound, ValidationFailed
from otherix.models.common import AsyncTaskAccepted
from otherix.models.pools import CacheEntryView, CachePolicyView, PoolCacheView
from otherix.store import Database
from otherix.store.ports.nodes import NodeStore
from otherix.store.ports.pools import PoolRow
from otherix.store.ports.vms import VmStore

PRUNE = "storage_pool.cache_prune"
SCRUB = "storage_pool.scrub"
QUARANTINE_CLEAR = "storage_pool.quarantine_clear"


def _policy(row: PoolRow) -> CachePolicy:
    try:
        return parse_cache_config(row.config)
    except CacheConfigError:  # stored before the rule: the agent ignores it too
        return CachePolicy()


@dataclass(kw_only=True, eq=False)
class CacheService:
    """The cache service, built once by ``api/compose.py`` with the collaborators below."""

    db: Database
    clock: Clock
    hub: WatchHub
    node_store: NodeStore
    vm_store: VmStore
    pool_service: PoolService
    task_service: TaskService

    def cache_view(self, ref: str) -> PoolCacheView:
        row = self.pool_service.resolve_one(ref)
        policy = _policy(row)
        with self.db.read() as conn:
            users = self.vm_store.vm_names_by_image(conn, row.id)
        images: list[CacheEntryView] = []
        for raw in row.images:
            if not isinstance(raw, dict):
                continue
            image: dict[str, Any] = dict(raw)
            sha = str(image.get("sha256") or "")
            images.append(
                CacheEntryView.model_validate(
                    {
                        **{k: image.get(k) for k in ("name", "sha256", "size_bytes", "format")},
                        "imported_at": _text(image.get("imported_at")),
                        "last_used_at": _text(image.get("last_used_at")),
                        "pinned": image.get("name") in policy.pinned,
                        "vms": sorted(users.get(sha, [])),
                    }
                )
            )
        return PoolCacheView(
            pool=row.name,
            pool_id=row.id,
            node=row.node_name,
            policy=CachePolicyView(
                max_bytes=policy.max_bytes,
                min_free_percent=policy.min_free_percent,
                min_age_seconds=policy.min_age_s,
                pinned=sorted(policy.pinned),
            ),
            images=sorted(images, key=lambda i: i.name),
        )

    def _set_pinned(self, row: PoolRow, pinned: set[str]) -> None:
        config: dict[str, Any] = dict(row.config or {})
        old = config.get("cache")
        cache: dict[str, Any] = dict(old) if isinstance(old, dict) else {}
        if pinned:
            cache["pinned"] = sorted(pinned)
        else:
            cache.pop("pinned", None)
        if cache:
            config["cache"] = cache
        else:
            config.pop("cache", None)
        self.pool_service.update(row.id, PoolPatch(name=None, config=config))

    def pin(self, ref: str, image: str) -> PoolCacheView:
        row = self.pool_service.resolve_one(ref)
        names = {str(i.get("name")) for i in row.images if isinstance(i, dict)}
        if image not in names:
            raise NotFound(
                f'image "{image}" is not in the cache of pool "{row.name}" on node '
                f"{row.node_name}: a pin keeps an image that is there; see 'otherix pool "
                f"cache list {row.name} --node {row.node_name}'",
                {"image": image, "pool": row.name, "node": row.node_name},
            )
        policy = _policy(row)
        if image not in policy.pinned:
            self._set_pinned(row, set(policy.pinned) | {image})
        return self.cache_view(row.id)

    def unpin(self, ref: str, image: str) -> PoolCacheView:
        row = self.pool_service.resolve_one(ref)
        policy = _policy(row)
        if image in policy.pinned:
            self._set_pinned(row, set(policy.pinned) - {image})
        return self.cache_view(row.id)

    def prune(self, principal: Principal, ref: str, *, dry_run: bool) -> AsyncTaskAccepted:
        return self._agent_task(principal, ref, PRUNE, "prune", {"dry_run": dry_run})

    def scrub(self, principal: Principal, ref: str) -> AsyncTaskAccepted:
        return self._agent_task(principal, ref, SCRUB, "scrub", {})

    def clear_quarantine(
        self, principal: Principal, ref: str, images: list[str]
    ) -> AsyncTaskAccepted:
        """A ``storage_pool.quarantine_clear`` task: the node's agent deletes the instance's
        quarantined entries of ``images`` (all of them when empty)."""
        for image in images:
            if not image or "/" in image or "\0" in image or image in (".", ".."):
                raise ValidationFailed(
                    f'"{image}" is not an image name (the last segment of its URL)',
                    {"field": "image", "value": image},
                )
        wanted = sorted(set(images)) or None
        return self._agent_task(
            principal, ref, QUARANTINE_CLEAR, "clear its quarantine", {"images": wanted}
        )

    def _agent_task(
        self, principal: Principal, ref: str, type_: str, verb: str, extra: dict[str, Any]
    ) -> AsyncTaskAccepted:
        pool = self.pool_service.resolve_one(ref)
        if pool.node_deleted_at is not None:
            raise Conflict("owning node is gone", {"current_status": "gone"})
        if pool.node_liveness not in SCANNABLE:
            raise Conflict(
                f"node {pool.node_name} is {pool.node_liveness}: its agent cannot {verb} now",
                {"current_status": pool.node_liveness},
            )
        with self.db.write() as conn:
            task_id = self.task_service.new_task(
                conn,
                now=self.clock.now(),
                type=type_,
                resource_type="storage_pool",
                resource_id=pool.id,
                node_id=pool.node_id,
                args={"pool": pool.name, "path": pool.path, **extra},
                created_by=principal.user_id,
                max_attempts=1,
            )
            self.node_store.bump_revision(conn, pool.node_id)
        self.hub.publish([pool.node_id])
        return tasks.accepted(task_id)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None

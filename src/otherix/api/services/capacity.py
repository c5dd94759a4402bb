"""Capacity history and time to full (issue 16.6).

Two parts, built by ``api/compose.py``:

- ``CapacityTrends`` (``services/capacitytrend.py``) folds the samples of the
  trend window into a ``domain.capacity.Trend`` per instance; ``PoolService``
  holds it and shows ``capacity_trend`` and the ``pool_filling`` condition;
- ``CapacityService`` is what the ``capacity`` worker runs (``sample_pass``)
  and what ``GET /v1/storage-pools/{id}/capacity-history`` calls (``history``).

A sample pass, in one write transaction: the time is the store's clock (the
database server's on PostgreSQL, so every replica computes the same bucket;
the process clock on SQLite, one process), the bucket its start
(``domain.capacity.bucket_start``); every pool instance that is ready, on a
ready node, with a capacity and available bytes reported gets one row for the
bucket, inserted with ``ON CONFLICT DO NOTHING``, so of several replicas that
pass in one bucket exactly one stores it. Then at most ``DELETE_BATCH`` samples
older than ``capacity.retention`` are deleted (the rest go on the next passes).
A pool that is deleted loses its samples with it (``ON DELETE CASCADE``); one
that is failed, or whose node is not ready, is not sampled (its numbers are
stale), which leaves a gap in its history.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from otherix.api.services.capacitytrend import CapacityTrends, trend_view
from otherix.api.services.pools import PoolService
from otherix.api.settings import ApiSettings
from otherix.domain.capacity import bucket_start
from otherix.domain.usage import Parts
from otherix.errors import ValidationFailed
from otherix.models.pools import PoolCapacityHistory, PoolCapacitySample
from otherix.store import Database
from otherix.store.ports.capacity import CapacitySampleRow, CapacityStore

log = logging.getLogger(__name__)

#: samples deleted for retention in one pass at most
DELETE_BATCH = 5000
#: history samples in one answer: the default and the most
HISTORY_LIMIT = 1000
HISTORY_MAX = 5000


@dataclass(kw_only=True, eq=False)
class CapacityService:
    """The sampler and the history, built once by ``api/compose.py``."""

    settings: ApiSettings
    db: Database
    capacity_store: CapacityStore
    trends: CapacityTrends
    pool_service: PoolService

    def sample_pass(self) -> dict[str, int]:
        """One sample of every samplable pool instance for the current bucket, and
        a bounded retention delete; returns ``{"sampled", "deleted"}``."""
        cfg = self.settings.capacity
        with self.db.write() as conn:
            now = self.trends.now(conn)
            at = bucket_start(now, cfg.sample_interval)
            rows = []
            for src in self.capacity_store.sample_sources(conn):
                parts = Parts.from_mapping(src.usage)
                rows.append(
                    CapacitySampleRow(
                        pool_id=src.pool_id,
                        sampled_at=at,
                        used_bytes=max(0, src.capacity_bytes - src.available_bytes),
                        capacity_bytes=src.capacity_bytes,
                        vm_disk_bytes=None if parts is None else parts.vm_disk_bytes,
                        image_cache_bytes=None if parts is None else parts.image_cache_bytes,
                    )
                )
            sampled = self.capacity_store.insert_samples(conn, rows)
            cutoff = now - timedelta(seconds=cfg.retention)
            deleted = self.capacity_store.delete_before(conn, cutoff, DELETE_BATCH)
        if deleted:
            log.info("capacity samples: %d older than the retention deleted", deleted)
        return {"sampled": sampled, "deleted": deleted}

    def history(
        self, ref: str, *, since: datetime | None, limit: int | None
    ) -> PoolCapacityHistory:
        """An instance's (UUID, or a name with one instance) samples from ``since``
        (oldest first, at most ``limit``) and its trend."""
        cfg = self.settings.capacity
        if limit is None:
            limit = HISTORY_LIMIT
        if not 1 <= limit <= HISTORY_MAX:
            raise ValidationFailed(
                f"limit must be between 1 and {HISTORY_MAX}", {"field": "query.limit"}
            )
        if since is not None:
            if since.tzinfo is None:
                raise ValidationFailed(
                    "since must carry a time zone (e.g. 2026-12-04T10:00:00Z)",
                    {"field": "query.since"},
                )
            try:
                since = since.astimezone(UTC)
            except OverflowError:  # 0001-01-01T00:00+01:00 has no UTC time
                raise ValidationFailed("since is out of range", {"field": "query.since"}) from None
        row = self.pool_service.resolve_one(ref)
        with self.db.read() as conn:
            found = self.capacity_store.samples(conn, [row.id], since=since, limit=limit + 1)
            t = self.trends.trends_for(conn, [row]).get(row.id)
        more = len(found) > limit
        shown = found[:limit]
        return PoolCapacityHistory(
            pool=row.name,
            pool_id=row.id,
            node=row.node_name,
            sample_interval_seconds=cfg.sample_interval,
            retention_seconds=cfg.retention,
            trend=None if t is None else trend_view(t),
            samples=[
                PoolCapacitySample(
                    sampled_at=s.sampled_at,
                    used_bytes=s.used_bytes,
                    capacity_bytes=s.capacity_bytes,
                    available_bytes=max(0, s.capacity_bytes - s.used_bytes),
                    vm_disk_bytes=s.vm_disk_bytes,
                    image_cache_bytes=s.image_cache_bytes,
                )
                for s in shown
            ],
            next_since=found[limit].sampled_at if more else None,
        )

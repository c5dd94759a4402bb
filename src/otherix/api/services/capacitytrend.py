"""The trend of each pool instance a view shows (issue 16.6): ``CapacityTrends``.

Held by ``PoolService`` (the pool views show ``capacity_trend`` and the
``pool_filling`` condition) and by ``CapacityService`` (the history route).
It reads the samples of the last ``capacity.trend_window`` for all the rows of
a view in one query and folds each instance's into a ``domain.capacity.Trend``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from otherix.api.clock import Clock
from otherix.api.settings import ApiSettings
from otherix.domain.capacity import Sample, Trend, is_filling, trend
from otherix.models.pools import CapacityTrendView
from otherix.store import Tx
from otherix.store.ports.capacity import CapacitySampleRow, CapacityStore
from otherix.store.ports.pools import PoolRow

FILLING = "pool_filling"


def trend_view(t: Trend) -> CapacityTrendView:
    return CapacityTrendView(
        state=t.state,
        samples=t.samples,
        bytes_per_day=None if t.bytes_per_day is None else round(t.bytes_per_day, 1),
        available_bytes=t.available_bytes,
        days_to_full=None if t.days_to_full is None else round(t.days_to_full, 3),
        full_at=t.full_at,
    )


def filling_message(t: Trend, warn_days: float) -> str:
    return (
        f"at its trend ({(t.bytes_per_day or 0) / (1 << 30):+.2f} GiB/day) the pool is "
        f"full in about {t.days_to_full or 0:.1f} days, under capacity.warn_days "
        f"({warn_days:g}); free space or move VM disks away"
    )


def _domain_samples(rows: Iterable[CapacitySampleRow]) -> list[Sample]:
    return [Sample(r.sampled_at, r.used_bytes, r.capacity_bytes) for r in rows]


@dataclass(kw_only=True, eq=False)
class CapacityTrends:
    """The trend of each pool row a view shows (one query for all of them)."""

    settings: ApiSettings
    clock: Clock
    capacity_store: CapacityStore

    def now(self, conn: Tx) -> datetime:
        """The store's clock: the database server's (PostgreSQL) or this process's."""
        return self.capacity_store.db_now(conn) or self.clock.now()

    def trends_for(self, conn: Tx, rows: Iterable[PoolRow]) -> dict[str, Trend]:
        cfg = self.settings.capacity
        ids = [r.id for r in rows if r.node_deleted_at is None]
        if not ids:
            return {}
        since = self.now(conn) - timedelta(seconds=cfg.trend_window)
        by_pool: dict[str, list[CapacitySampleRow]] = {i: [] for i in ids}
        for s in self.capacity_store.samples(conn, ids, since=since):
            by_pool[s.pool_id].append(s)
        return {
            pid: trend(_domain_samples(found), cfg.sample_interval)
            for pid, found in by_pool.items()
        }

    def condition(self, t: Trend | None) -> dict[str, str] | None:
        """The ``pool_filling`` condition for a trend, or None."""
        warn = self.settings.capacity.warn_days
        if t is None or not is_filling(t, warn):
            return None
        return {"type": FILLING, "message": filling_message(t, warn)}

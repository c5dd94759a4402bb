"""Pool capacity samples (``pool_capacity_samples``, migration 0013, issue 16.6).

``SqlCapacity`` implements ``ports.capacity.CapacityStore`` for both backends.
Written by the capacity sampler (``api/services/capacity.py``, run by the
``capacity`` worker); read by the pool views and the history route. The insert
is idempotent on (pool, bucket): ``INSERT ... ON CONFLICT DO NOTHING``, so API
replicas that sample the same bucket store one row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from otherix.store.ports.capacity import CapacitySampleRow, CapacityStore, SampleSource
from otherix.store.schema import nodes, pool_capacity_samples, pool_status, storage_pools
from otherix.store.tx import Tx, sql

__all__ = ["SqlCapacity", "store"]

cs = pool_capacity_samples
#: rows in one INSERT (6 parameters each)
CHUNK = 100


class SqlCapacity:
    """:class:`CapacityStore` in SQLAlchemy Core, for both backends."""

    def db_now(self, tx: Tx) -> datetime | None:
        conn = sql(tx)
        if conn.dialect.name != "postgresql":
            return None
        value = conn.execute(sa.select(sa.func.now())).scalar_one()
        assert isinstance(value, datetime)
        return value

    def sample_sources(self, tx: Tx) -> list[SampleSource]:
        ps, sp = pool_status, storage_pools
        stmt = (
            sa.select(ps.c.pool_id, ps.c.capacity_bytes, ps.c.available_bytes, ps.c.usage)
            .select_from(
                ps.join(sp, sp.c.id == ps.c.pool_id).join(nodes, nodes.c.id == sp.c.node_id)
            )
            .where(
                nodes.c.deleted_at.is_(None),
                nodes.c.status == "ready",
                ps.c.reconciliation_status == "ready",
                ps.c.capacity_bytes.is_not(None),
                ps.c.available_bytes.is_not(None),
            )
            .order_by(ps.c.pool_id)
        )
        return [SampleSource(**r) for r in sql(tx).execute(stmt).mappings()]

    def insert_samples(self, tx: Tx, rows: Sequence[CapacitySampleRow]) -> int:
        if not rows:
            return 0
        conn = sql(tx)
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        values = [
            {
                "pool_id": r.pool_id,
                "sampled_at": r.sampled_at,
                "used_bytes": r.used_bytes,
                "capacity_bytes": r.capacity_bytes,
                "vm_disk_bytes": r.vm_disk_bytes,
                "image_cache_bytes": r.image_cache_bytes,
            }
            for r in rows
        ]
        inserted = 0
        for start in range(0, len(values), CHUNK):  # SQLite's bound-parameter limit
            stmt = (
                insert(cs)
                .values(values[start : start + CHUNK])
                .on_conflict_do_nothing(index_elements=["pool_id", "sampled_at"])
                .returning(cs.c.pool_id)  # rowcount is not reliable here on psycopg
            )
            inserted += len(conn.execute(stmt).all())
        return inserted

    def delete_before(self, tx: Tx, cutoff: datetime, limit: int) -> int:
        oldest = (
            sa.select(cs.c.pool_id, cs.c.sampled_at)
            .where(cs.c.sampled_at < cutoff)
            .order_by(cs.c.sampled_at)
            .limit(limit)
        )
        stmt = cs.delete().where(sa.tuple_(cs.c.pool_id, cs.c.sampled_at).in_(oldest))
        return sql(tx).execute(stmt).rowcount

    def samples(
        self,
        tx: Tx,
        pool_ids: Sequence[str],
        *,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[CapacitySampleRow]:
        if not pool_ids:
            return []
        stmt = sa.select(cs).where(cs.c.pool_id.in_(list(pool_ids)))
        if since is not None:
            stmt = stmt.where(cs.c.sampled_at >= since)
        stmt = stmt.order_by(cs.c.pool_id, cs.c.sampled_at)
        if limit is not None:
            stmt = stmt.limit(limit)
        return [CapacitySampleRow(**r) for r in sql(tx).execute(stmt).mappings()]


#: The one instance (stateless); ``Database.capacity`` is this.
store: CapacityStore = SqlCapacity()

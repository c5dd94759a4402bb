"""The capacity-history aggregate (issue 16.6): ``pool_capacity_samples``, one
sample of each pool instance's used bytes per sampling bucket, and what the
sampler reads from ``pool_status`` to take them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from otherix.store.ports import JSONObject
from otherix.store.tx import Tx


@dataclass(frozen=True, slots=True)
class CapacitySampleRow:
    pool_id: str
    #: the start of the sampling bucket (``domain.capacity.bucket_start``)
    sampled_at: datetime
    #: the filesystem's capacity - available at the time
    used_bytes: int
    capacity_bytes: int
    #: the parts of the agent's usage report at the time (null without one)
    vm_disk_bytes: int | None
    image_cache_bytes: int | None


@dataclass(frozen=True, slots=True)
class SampleSource:
    """A pool instance the sampler can take a sample of: ready, on a ready node,
    with a capacity and available bytes reported."""

    pool_id: str
    capacity_bytes: int
    available_bytes: int
    usage: JSONObject | None


class CapacityStore(Protocol):
    def db_now(self, tx: Tx) -> datetime | None:
        """The database server's clock (PostgreSQL), None where the process's clock
        is the store's (SQLite: one process)."""
        ...

    def sample_sources(self, tx: Tx) -> list[SampleSource]: ...
    def insert_samples(self, tx: Tx, rows: Sequence[CapacitySampleRow]) -> int:
        """Insert the rows, skipping any whose (pool, bucket) is already stored;
        returns how many were inserted."""
        ...

    def delete_before(self, tx: Tx, cutoff: datetime, limit: int) -> int:
        """Delete at most ``limit`` samples older than ``cutoff`` (oldest first)."""
        ...

    def samples(
        self,
        tx: Tx,
        pool_ids: Sequence[str],
        *,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[CapacitySampleRow]:
        """Samples of these pools at or after ``since``, by pool then time, at most
        ``limit`` (the oldest ones)."""
        ...

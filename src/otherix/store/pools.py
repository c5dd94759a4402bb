"""Storage pool instances (desired rows) joined with their observed status.

Every read returns the instance row, its ``pool_status`` columns, its
node's name/status and its VM disk counts (``vm_disks_total``,
``vm_disks_missing``: disks whose file the agent reports missing, or every
made disk while the pool is failed), which is everything a pool view needs in
one query.

``SqlPools`` implements ``ports.pools.PoolStore`` and speaks its frozen rows.

Identity (migration 0007): ``pool_status.marker_id`` is the identity marker id
the control plane chose for the pool (at insert, and again at ``reinit``),
``identity_mode`` what the agent may do to find it (``create``, ``adopt``,
``verify``). ``declared_for_node`` and ``disks_to_check`` are what a node's
desired state declares.

Usage (migration 0010, issue 16): ``pool_status.usage`` is the agent's last
``usage`` report, JSON, null until one; ``gauges`` reads every live instance's
numbers for ``/metrics`` in one query.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from otherix.domain.vms import vm_disk_path
from otherix.store.ports import JSONObject
from otherix.store.ports.pools import (
    DeclaredPoolRow,
    DiskToCheck,
    NewPool,
    PoolChange,
    PoolDiskRow,
    PoolGaugeRow,
    PoolRef,
    PoolRow,
    PoolStatusChange,
    PoolStatusRow,
    PoolStore,
)
from otherix.store.schema import nodes, pool_status, storage_pools, vm_disks, vms
from otherix.store.tx import Tx, sql

sp, ps = storage_pools, pool_status


def _committed_since_scan() -> sa.ScalarSelect[Any]:
    """GiB of VM disks created on the pool after its last capacity report."""
    return (
        sa.select(sa.func.coalesce(sa.func.sum(vm_disks.c.size_gib), 0))
        .where(vm_disks.c.storage_pool_id == sp.c.id, vm_disks.c.created_at > ps.c.reported_at)
        .scalar_subquery()
    )


def _disks_on_pool() -> sa.Select[Any]:
    return (
        sa.select(sa.func.count())
        .select_from(vm_disks)
        .where(vm_disks.c.storage_pool_id == sp.c.id)
    )


def _missing_disks() -> sa.ScalarSelect[Any]:
    """Disks made on the pool (file_path known) that are missing, or all of them if it failed."""
    return (
        _disks_on_pool()
        .where(
            vm_disks.c.file_path.is_not(None),
            sa.or_(ps.c.reconciliation_status == "failed", vm_disks.c.missing_since.is_not(None)),
        )
        .scalar_subquery()
    )


def _select() -> sa.Select[Any]:
    return sa.select(
        sp,
        _committed_since_scan().label("committed_gib"),
        _disks_on_pool().scalar_subquery().label("vm_disks_total"),
        _missing_disks().label("vm_disks_missing"),
        ps.c.reconciliation_status,
        ps.c.reconciliation_error,
        ps.c.reconciliation_reason,
        ps.c.identity_mode,
        ps.c.marker_id,
        ps.c.last_reconciled_at,
        ps.c.capacity_bytes,
        ps.c.available_bytes,
        ps.c.reported_at,
        ps.c.pressure_since,
        ps.c.pressure_count,
        ps.c.images,
        ps.c.usage,
        ps.c.scrub,
        nodes.c.name.label("node_name"),
        nodes.c.status.label("node_liveness"),
        nodes.c.cordoned.label("node_cordoned"),
        nodes.c.deleted_at.label("node_deleted_at"),
    ).select_from(sp.join(ps, ps.c.pool_id == sp.c.id).join(nodes, nodes.c.id == sp.c.node_id))


def _rows(tx: Tx, stmt: sa.Select[Any]) -> list[RowMapping]:
    return list(sql(tx).execute(stmt).mappings())


def _pools(tx: Tx, stmt: sa.Select[Any]) -> list[PoolRow]:
    return [PoolRow(**r) for r in _rows(tx, stmt)]


_REF = (sp.c.id, sp.c.node_id, sp.c.name, sp.c.name_lower, sp.c.path)


def _refs(tx: Tx, stmt: sa.Select[Any]) -> list[PoolRef]:
    return [PoolRef(**r) for r in _rows(tx, stmt)]


class SqlPools:
    """:class:`PoolStore` in SQLAlchemy Core, for both backends."""

    def insert_pool(self, tx: Tx, pool: NewPool) -> None:
        """A new instance: ``pending``, identity ``create`` with a fresh marker id."""
        sql(tx).execute(
            sp.insert().values(
                id=pool.id,
                node_id=pool.node_id,
                name=pool.name,
                name_lower=pool.name.lower(),
                type=pool.type,
                path=pool.path,
                config=pool.config,
                created_at=pool.created_at,
                updated_at=pool.created_at,
            )
        )
        sql(tx).execute(
            ps.insert().values(
                pool_id=pool.id,
                reconciliation_status="pending",
                images=[],
                identity_mode="create",
                marker_id=str(uuid.uuid4()),
            )
        )

    def get_pool(self, tx: Tx, pool_id: str) -> PoolRow | None:
        rows = _pools(tx, _select().where(sp.c.id == pool_id))
        return rows[0] if rows else None

    def get_pools_by_name(self, tx: Tx, name: str) -> list[PoolRow]:
        stmt = (
            _select().where(sp.c.name_lower == name.lower()).order_by(nodes.c.name_lower, sp.c.id)
        )
        return _pools(tx, stmt)

    def first_name_match(self, tx: Tx, name: str) -> str | None:
        """Canonical spelling of the first instance with this name (oldest first)."""
        stmt = (
            sa.select(sp.c.name)
            .where(sp.c.name_lower == name.lower())
            .order_by(sp.c.created_at, sp.c.id)
            .limit(1)
        )
        return sql(tx).execute(stmt).scalar_one_or_none()

    def list_pools(
        self,
        tx: Tx,
        *,
        after: tuple[datetime, str] | None,
        limit: int,
        node_id: str | None = None,
        pool_type: str | None = None,
    ) -> list[PoolRow]:
        stmt = _select()
        if after is not None:
            stmt = stmt.where(sa.tuple_(sp.c.created_at, sp.c.id) > sa.tuple_(*after))
        if node_id is not None:
            stmt = stmt.where(sp.c.node_id == node_id)
        if pool_type is not None:
            stmt = stmt.where(sp.c.type == pool_type)
        return _pools(tx, stmt.order_by(sp.c.created_at, sp.c.id).limit(limit))

    def update_pool(self, tx: Tx, pool_id: str, change: PoolChange) -> int:
        return sql(tx).execute(sp.update().where(sp.c.id == pool_id).values(**change)).rowcount

    def count_disks(self, tx: Tx, pool_id: str) -> int:
        stmt = (
            sa.select(sa.func.count())
            .select_from(vm_disks)
            .where(
                sa.or_(vm_disks.c.storage_pool_id == pool_id, vm_disks.c.move_pool_id == pool_id)
            )
        )
        return int(sql(tx).execute(stmt).scalar_one())

    def delete_pool(self, tx: Tx, pool_id: str) -> int:
        return sql(tx).execute(sp.delete().where(sp.c.id == pool_id)).rowcount

    def lock_pool(self, tx: Tx, pool_id: str) -> str | None:
        """Lock the row for the rest of the transaction (PostgreSQL); returns its node_id."""
        stmt = sa.select(sp.c.node_id).where(sp.c.id == pool_id).with_for_update()
        return sql(tx).execute(stmt).scalar_one_or_none()

    def declared_for_node(self, tx: Tx, node_id: str) -> list[DeclaredPoolRow]:
        stmt = (
            sa.select(
                sp.c.id,
                sp.c.name,
                sp.c.type,
                sp.c.path,
                sp.c.config,
                sp.c.created_at,
                ps.c.marker_id,
                ps.c.identity_mode,
            )
            .select_from(sp.join(ps, ps.c.pool_id == sp.c.id))
            .where(sp.c.node_id == node_id)
            .order_by(sp.c.name_lower)
        )
        return [DeclaredPoolRow(**r) for r in _rows(tx, stmt)]

    def disks_to_check(self, tx: Tx, node_id: str) -> list[DiskToCheck]:
        """The node's made VM disks the agent must find: file known, VM not being deleted."""
        stmt = (
            sa.select(
                vm_disks.c.id,
                vm_disks.c.vm_id,
                vm_disks.c.file_path,
                vm_disks.c.storage_pool_id,
                vm_disks.c.image_sha256,
            )
            .select_from(
                vm_disks.join(sp, sp.c.id == vm_disks.c.storage_pool_id).join(
                    vms, vms.c.id == vm_disks.c.vm_id
                )
            )
            .where(sp.c.node_id == node_id, vm_disks.c.file_path.is_not(None))
            .where(vms.c.phase != "deleting")
            .order_by(vm_disks.c.id)
        )
        out = [DiskToCheck(**r) for r in _rows(tx, stmt)]
        # 0014: disks a move is bringing into one of the node's pools, where they will be
        incoming = (
            sa.select(
                vm_disks.c.id,
                vm_disks.c.vm_id,
                vm_disks.c.format,
                vm_disks.c.move_pool_id,
                vm_disks.c.image_sha256,
                sp.c.path,
            )
            .select_from(vm_disks.join(sp, sp.c.id == vm_disks.c.move_pool_id))
            .where(sp.c.node_id == node_id)
            .order_by(vm_disks.c.id)
        )
        out.extend(
            DiskToCheck(
                id=r["id"],
                vm_id=r["vm_id"],
                file_path=vm_disk_path(r["path"], r["vm_id"], r["format"]),
                storage_pool_id=r["move_pool_id"],
                image_sha256=r["image_sha256"],
                incoming=True,
            )
            for r in _rows(tx, incoming)
        )
        return out

    def missing_disk_ids(self, tx: Tx, node_id: str) -> dict[str, set[str]]:
        """pool id -> ids of its disks currently recorded missing (the node's pools)."""
        stmt = (
            sa.select(vm_disks.c.storage_pool_id, vm_disks.c.id)
            .select_from(vm_disks.join(sp, sp.c.id == vm_disks.c.storage_pool_id))
            .where(sp.c.node_id == node_id, vm_disks.c.missing_since.is_not(None))
        )
        out: dict[str, set[str]] = {}
        for pool_id, disk_id in sql(tx).execute(stmt):
            out.setdefault(pool_id, set()).add(disk_id)
        return out

    def mark_disks_missing(
        self, tx: Tx, pool_id: str, disk_ids: Collection[str], since: datetime | None
    ) -> None:
        """Set (``since``) or clear (None) ``missing_since`` of these disks of the pool."""
        if not disk_ids:
            return
        sql(tx).execute(
            vm_disks.update()
            .where(vm_disks.c.storage_pool_id == pool_id, vm_disks.c.id.in_(list(disk_ids)))
            .values(missing_since=since)
        )

    def status_for_node(self, tx: Tx, node_id: str) -> list[PoolStatusRow]:
        stmt = (
            sa.select(sp.c.name_lower, ps)
            .select_from(sp.join(ps, ps.c.pool_id == sp.c.id))
            .where(sp.c.node_id == node_id)
        )
        return [PoolStatusRow(**r) for r in _rows(tx, stmt)]

    def update_status(self, tx: Tx, pool_id: str, change: PoolStatusChange) -> None:
        sql(tx).execute(ps.update().where(ps.c.pool_id == pool_id).values(**change))

    # one directory, one pool; node removal (0006) -----------------------------

    def paths_on_nodes(self, tx: Tx, node_ids: Sequence[str]) -> list[PoolRef]:
        """Every pool on these nodes, oldest first (narrow: what the overlap rule
        needs for a page's nodes, in one query)."""
        ids = sorted(set(node_ids))
        if not ids:
            return []
        stmt = sa.select(*_REF).where(sp.c.node_id.in_(ids)).order_by(sp.c.created_at, sp.c.id)
        return _refs(tx, stmt)

    def lock_for_delete(
        self, tx: Tx, *, node_id: str | None, names: Sequence[str]
    ) -> list[PoolRef]:
        """Lock (PostgreSQL; SQLite holds its write lock already) every pool on
        ``node_id`` and every instance of ``names``, in one statement ordered by id,
        so two deletes never lock in opposite orders. Returns the locked rows."""
        cond: list[sa.ColumnElement[bool]] = []
        if node_id is not None:
            cond.append(sp.c.node_id == node_id)
        lowered = sorted({n.lower() for n in names})
        if lowered:
            cond.append(sp.c.name_lower.in_(lowered))
        if not cond:
            return []
        stmt = sa.select(*_REF).where(sa.or_(*cond)).order_by(sp.c.id).with_for_update()
        return _refs(tx, stmt)

    def lock_instances(self, tx: Tx, name: str, also_id: str | None = None) -> list[PoolRef]:
        """Lock every instance named ``name`` (and the row ``also_id``), ordered by id."""
        cond = sp.c.name_lower == name.lower()
        if also_id is not None:
            cond = sa.or_(cond, sp.c.id == also_id)
        stmt = sa.select(*_REF).where(cond).order_by(sp.c.id).with_for_update()
        return _refs(tx, stmt)

    def count_disks_on_node(self, tx: Tx, node_id: str) -> int:
        stmt = (
            sa.select(sa.func.count())
            .select_from(vm_disks.join(sp, sp.c.id == vm_disks.c.storage_pool_id))
            .where(sp.c.node_id == node_id)
        )
        return int(sql(tx).execute(stmt).scalar_one())

    def vm_names_on_node_pools(self, tx: Tx, node_id: str, limit: int = 20) -> list[str]:
        """Names of the VMs whose disks live on the node's pools (first ``limit``, by name)."""
        stmt = (
            sa.select(vms.c.name)
            .select_from(
                vms.join(vm_disks, vm_disks.c.vm_id == vms.c.id).join(
                    sp, sp.c.id == vm_disks.c.storage_pool_id
                )
            )
            .where(sp.c.node_id == node_id)
            .distinct()
            .order_by(vms.c.name)
            .limit(limit)
        )
        return list(sql(tx).execute(stmt).scalars())

    def delete_pools(self, tx: Tx, pool_ids: Sequence[str]) -> int:
        """Delete these pool rows (their ``pool_status`` rows go by cascade)."""
        ids = list(pool_ids)
        if not ids:
            return 0
        sql(tx).execute(ps.delete().where(ps.c.pool_id.in_(ids)))
        return sql(tx).execute(sp.delete().where(sp.c.id.in_(ids))).rowcount

    def reinit_identity(self, tx: Tx, pool_id: str, marker_id: str) -> None:
        """Forget the pool's identity: a new marker id, ``create``, status ``pending``."""
        sql(tx).execute(
            ps.update()
            .where(ps.c.pool_id == pool_id)
            .values(
                identity_mode="create",
                marker_id=marker_id,
                reconciliation_status="pending",
                reconciliation_error=None,
                reconciliation_reason=None,
            )
        )

    # /metrics (issue 16) --------------------------------------------------------

    def gauges(self, tx: Tx) -> list[PoolGaugeRow]:
        """Every pool instance on a node that is not deleted, in one query (a scrape)."""
        stmt = (
            sa.select(
                sp.c.name.label("pool_name"),
                nodes.c.name.label("node_name"),
                ps.c.capacity_bytes,
                ps.c.available_bytes,
                ps.c.pressure_since.is_not(None).label("under_pressure"),
                ps.c.usage,
            )
            .select_from(
                sp.join(ps, ps.c.pool_id == sp.c.id).join(nodes, nodes.c.id == sp.c.node_id)
            )
            .where(nodes.c.deleted_at.is_(None))
            .order_by(nodes.c.name_lower, sp.c.name_lower)
        )
        return [
            PoolGaugeRow(**{**r, "under_pressure": bool(r["under_pressure"])})
            for r in _rows(tx, stmt)
        ]

    # --- drift (0012, issue 16) -----------------------------------------------------

    def drift_of(self, tx: Tx, pool_id: str) -> JSONObject | None:
        """The agent's last drift report of the instance, or None."""
        stmt = sa.select(ps.c.drift).where(ps.c.pool_id == pool_id)
        value = sql(tx).execute(stmt).scalar_one_or_none()
        return value if isinstance(value, dict) else None

    def disks_on_pool(self, tx: Tx, pool_id: str) -> list[PoolDiskRow]:
        """Every VM disk on the instance with its VM's id, name and phase."""
        stmt = (
            sa.select(
                vm_disks.c.id,
                vm_disks.c.vm_id,
                vms.c.name.label("vm_name"),
                vms.c.phase.label("vm_phase"),
                vm_disks.c.file_path,
                vm_disks.c.missing_since,
            )
            .select_from(vm_disks.join(vms, vms.c.id == vm_disks.c.vm_id))
            .where(vm_disks.c.storage_pool_id == pool_id)
            .order_by(vms.c.name_lower, vm_disks.c.id)
        )
        return [PoolDiskRow(**r) for r in _rows(tx, stmt)]

    def set_disk_format(self, tx: Tx, vm_id: str, fmt: str) -> None:
        """The format an imported root disk turned out to have (``vm.import`` result)."""
        sql(tx).execute(
            vm_disks.update()
            .where(vm_disks.c.vm_id == vm_id, vm_disks.c.device_order == 0)
            .values(format=fmt)
        )


#: The one instance (stateless). ``Database.pools`` is this; services that are
#: not handed a store yet import it as ``qp``.
store: PoolStore = SqlPools()

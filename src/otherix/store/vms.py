"""VMs and their disks: the rows the VM services and the scheduler read and write.

Every VM read returns the ``vms`` row with its owner's username, its node's
name and the pool (name and id) of its root disk (``device_order`` 0), with
what the VM view needs to say ``disk_missing`` (the root disk's
``file_path`` and ``missing_since``, its pool's reconciliation status and
reason), which is everything a VM view needs in one query. Writes that race (binding a
pending VM, moving a phase) are compare-and-set: they name the state they
expect and return the row count, so the caller knows whether it won.

``SqlVms`` implements ``ports.vms.VmStore`` and speaks its frozen rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import RowMapping

from otherix.store.ports.vms import (
    NewVm,
    NewVmDisk,
    RootDiskChange,
    VmChange,
    VmDiskRow,
    VmRecord,
    VmRow,
    VmRuntimeRow,
    VmStore,
)
from otherix.store.schema import (
    nodes,
    pool_status,
    storage_pools,
    users,
    vm_disks,
    vm_runtime,
    vms,
)
from otherix.store.tx import Tx, sql

_root = vm_disks.alias("root_disk")
_root_pool = storage_pools.alias("root_pool")
_root_status = pool_status.alias("root_pool_status")


def _rows(tx: Tx, stmt: sa.Select[Any]) -> list[RowMapping]:
    return list(sql(tx).execute(stmt).mappings())


def _select() -> sa.Select[Any]:
    return sa.select(
        vms,
        users.c.username.label("owner"),
        nodes.c.name.label("node_name"),
        _root_pool.c.id.label("root_pool_id"),
        _root_pool.c.name.label("root_pool_name"),
        _root.c.file_path.label("root_file_path"),
        _root.c.missing_since.label("root_missing_since"),
        _root_status.c.reconciliation_status.label("root_pool_status"),
        _root_status.c.reconciliation_reason.label("root_pool_reason"),
        vm_runtime.c.observed.label("runtime"),
        vm_runtime.c.observed_at.label("runtime_at"),
    ).select_from(
        vms.join(users, users.c.id == vms.c.owner_id)
        .outerjoin(nodes, nodes.c.id == vms.c.node_id)
        .outerjoin(_root, sa.and_(_root.c.vm_id == vms.c.id, _root.c.device_order == 0))
        .outerjoin(_root_pool, _root_pool.c.id == _root.c.storage_pool_id)
        .outerjoin(_root_status, _root_status.c.pool_id == _root.c.storage_pool_id)
        .outerjoin(vm_runtime, vm_runtime.c.vm_id == vms.c.id)
    )


def _vms(tx: Tx, stmt: sa.Select[Any]) -> list[VmRow]:
    return [VmRow(**r) for r in _rows(tx, stmt)]


def _on_pool(pool_id: str | None, pool_name: str | None) -> sa.ColumnElement[bool]:
    """VMs with a disk on the pool, or not yet placed and asking for it."""
    disk = sa.select(vm_disks.c.id).where(vm_disks.c.vm_id == vms.c.id)
    if pool_id is not None:
        disk = disk.where(vm_disks.c.storage_pool_id == pool_id)
        asked: sa.ColumnElement[bool] = vms.c.pool_ref == pool_id
    else:
        assert pool_name is not None
        name = pool_name.lower()
        ids = sa.select(storage_pools.c.id).where(storage_pools.c.name_lower == name)
        disk = disk.where(vm_disks.c.storage_pool_id.in_(ids.scalar_subquery()))
        asked = sa.or_(sa.func.lower(vms.c.pool_ref) == name, vms.c.pool_ref.in_(ids))
    return sa.or_(disk.exists(), sa.and_(vms.c.node_id.is_(None), asked))


class SqlVms:
    """:class:`VmStore` in SQLAlchemy Core, for both backends."""

    def insert_vm(self, tx: Tx, vm: NewVm) -> VmRecord:
        """A new VM: ``pending``, unplaced, no status yet; returns the row it wrote."""
        row = VmRecord(
            id=vm.id,
            name=vm.name,
            name_lower=vm.name.lower(),
            owner_id=vm.owner_id,
            spec=vm.spec,
            node_id=None,
            phase="pending",
            reason=None,
            message=None,
            created_at=vm.created_at,
            updated_at=vm.created_at,
            pool_ref=vm.pool_ref,
            status_details=None,
            task_id=None,
        )
        # only the columns a new VM sets: the others keep SQL NULL (a JSON column
        # given None would store JSON null)
        sql(tx).execute(
            vms.insert().values(
                id=row.id,
                name=row.name,
                name_lower=row.name_lower,
                owner_id=row.owner_id,
                spec=row.spec,
                phase=row.phase,
                pool_ref=row.pool_ref,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )
        )
        return row

    def get_vm(self, tx: Tx, vm_id: str) -> VmRow | None:
        rows = _vms(tx, _select().where(vms.c.id == vm_id))
        return rows[0] if rows else None

    def get_vm_by_name(self, tx: Tx, name: str) -> VmRow | None:
        rows = _vms(tx, _select().where(vms.c.name_lower == name.lower()))
        return rows[0] if rows else None

    def lock_vm(self, tx: Tx, vm_id: str) -> VmRecord | None:
        """The bare row, locked for the rest of the transaction (PostgreSQL)."""
        stmt = sa.select(vms).where(vms.c.id == vm_id).with_for_update()
        first = sql(tx).execute(stmt).mappings().first()
        return VmRecord(**first) if first else None

    def list_vms(
        self,
        tx: Tx,
        *,
        after: tuple[datetime, str] | None,
        limit: int,
        owner_id: str | None = None,
        node_id: str | None = None,
        phase: str | None = None,
        pool_id: str | None = None,
        pool_name: str | None = None,
    ) -> list[VmRow]:
        stmt = _select()
        if after is not None:
            stmt = stmt.where(sa.tuple_(vms.c.created_at, vms.c.id) > sa.tuple_(*after))
        if owner_id is not None:
            stmt = stmt.where(vms.c.owner_id == owner_id)
        if node_id is not None:
            stmt = stmt.where(vms.c.node_id == node_id)
        if phase is not None:
            stmt = stmt.where(vms.c.phase == phase)
        if pool_id is not None or pool_name is not None:
            stmt = stmt.where(_on_pool(pool_id, pool_name))
        return _vms(tx, stmt.order_by(vms.c.created_at, vms.c.id).limit(limit))

    def unscheduled(self, tx: Tx, limit: int) -> list[VmRecord]:
        """Pending VMs not placed yet, oldest first (rows without a requested pool,
        which no API call writes, are left alone)."""
        stmt = (
            sa.select(vms)
            .where(vms.c.phase == "pending", vms.c.node_id.is_(None), vms.c.pool_ref.is_not(None))
            .order_by(vms.c.created_at, vms.c.id)
            .limit(limit)
        )
        return [VmRecord(**r) for r in _rows(tx, stmt)]

    def update_vm(
        self,
        tx: Tx,
        vm_id: str,
        change: VmChange,
        *,
        phases: Iterable[str] | None = None,
        unbound: bool = False,
    ) -> int:
        """Update the row if its phase is one of ``phases`` (and, with ``unbound``,
        it has no node yet); returns the number of rows changed (0 or 1)."""
        stmt = vms.update().where(vms.c.id == vm_id)
        if phases is not None:
            stmt = stmt.where(vms.c.phase.in_(list(phases)))
        if unbound:
            stmt = stmt.where(vms.c.node_id.is_(None))
        return sql(tx).execute(stmt.values(**change)).rowcount

    def delete_vm(self, tx: Tx, vm_id: str) -> int:
        sql(tx).execute(vm_runtime.delete().where(vm_runtime.c.vm_id == vm_id))
        sql(tx).execute(vm_disks.delete().where(vm_disks.c.vm_id == vm_id))
        return sql(tx).execute(vms.delete().where(vms.c.id == vm_id)).rowcount

    # disks -------------------------------------------------------------------------------

    def insert_disk(self, tx: Tx, disk: NewVmDisk) -> None:
        sql(tx).execute(
            vm_disks.insert().values(
                id=disk.id,
                vm_id=disk.vm_id,
                storage_pool_id=disk.storage_pool_id,
                device_order=disk.device_order,
                size_gib=disk.size_gib,
                format=disk.format,
                created_at=disk.created_at,
                updated_at=disk.created_at,
            )
        )

    def disks_for_vm(self, tx: Tx, vm_id: str) -> list[VmDiskRow]:
        stmt = (
            sa.select(
                vm_disks,
                storage_pools.c.name.label("pool"),
                storage_pools.c.path.label("pool_path"),
                pool_status.c.reconciliation_status.label("pool_status"),
                pool_status.c.reconciliation_reason.label("pool_reason"),
            )
            .select_from(
                vm_disks.join(storage_pools, storage_pools.c.id == vm_disks.c.storage_pool_id).join(
                    pool_status, pool_status.c.pool_id == vm_disks.c.storage_pool_id
                )
            )
            .where(vm_disks.c.vm_id == vm_id)
            .order_by(vm_disks.c.device_order, vm_disks.c.id)
        )
        return [VmDiskRow(**r) for r in _rows(tx, stmt)]

    def update_root_disk(self, tx: Tx, vm_id: str, change: RootDiskChange) -> int:
        stmt = (
            vm_disks.update()
            .where(vm_disks.c.vm_id == vm_id, vm_disks.c.device_order == 0)
            .values(**change)
        )
        return sql(tx).execute(stmt).rowcount

    def node_architectures(self, tx: Tx, node_ids: Iterable[str]) -> dict[str, str | None]:
        ids = list(set(node_ids))
        if not ids:
            return {}
        stmt = sa.select(nodes.c.id, nodes.c.architecture).where(nodes.c.id.in_(ids))
        return {r.id: r.architecture for r in sql(tx).execute(stmt)}

    # runtime (what the node reports of each VM's QEMU) ----------------------------------

    def vm_names_by_image(self, tx: Tx, pool_id: str) -> dict[str, list[str]]:
        """image sha256 -> names of the VMs whose disk on the pool was made from it."""
        stmt = (
            sa.select(vm_disks.c.image_sha256, vms.c.name)
            .select_from(vm_disks.join(vms, vms.c.id == vm_disks.c.vm_id))
            .where(vm_disks.c.storage_pool_id == pool_id, vm_disks.c.image_sha256.is_not(None))
        )
        out: dict[str, list[str]] = {}
        for sha, name in sql(tx).execute(stmt):
            out.setdefault(sha, []).append(name)
        return out

    def vm_ids_on_node(self, tx: Tx, node_id: str) -> set[str]:
        stmt = sa.select(vms.c.id).where(vms.c.node_id == node_id)
        return set(sql(tx).execute(stmt).scalars())

    def runtimes_on_node(self, tx: Tx, node_id: str) -> dict[str, VmRuntimeRow]:
        stmt = (
            sa.select(vm_runtime)
            .select_from(vm_runtime.join(vms, vms.c.id == vm_runtime.c.vm_id))
            .where(vms.c.node_id == node_id)
        )
        return {r["vm_id"]: VmRuntimeRow(**r) for r in _rows(tx, stmt)}

    def put_runtime(self, tx: Tx, row: VmRuntimeRow) -> None:
        """Insert or replace the VM's runtime row, in one statement (an upsert): a task
        outcome and a heartbeat that both find no row must not both insert."""
        conn = sql(tx)
        values = {"state": row.state, "observed": row.observed, "observed_at": row.observed_at}
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(vm_runtime).values(vm_id=row.vm_id, **values)
        conn.execute(stmt.on_conflict_do_update(index_elements=["vm_id"], set_=values))

    def delete_runtimes(self, tx: Tx, vm_ids: Iterable[str]) -> int:
        ids = list(vm_ids)
        if not ids:
            return 0
        return sql(tx).execute(vm_runtime.delete().where(vm_runtime.c.vm_id.in_(ids))).rowcount


store: VmStore = SqlVms()

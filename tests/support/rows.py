"""Store rows written directly by tests, for states a user reaches only through
a full agent round trip (a VM holding a disk on a pool): the one place the
tests write ``vms`` and ``vm_disks`` rows (the api, cli and store suites)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from otherix.store import Database
from otherix.store.schema import users, vm_disks, vms
from otherix.store.tx import sql


def insert_vm(
    db: Database,
    owner_id: str,
    name: str | None = None,
    *,
    phase: str = "pending",
    vm_id: str | None = None,
    at: datetime | None = None,
) -> str:
    """A ``vms`` row owned by ``owner_id`` (an empty spec); returns its id."""
    vm_id = vm_id or str(uuid.uuid4())
    name = name or f"vm-{vm_id[:8]}"
    now = at or datetime.now(UTC)
    with db.write() as conn:
        sql(conn).execute(
            vms.insert().values(
                id=vm_id,
                name=name,
                name_lower=name.lower(),
                owner_id=owner_id,
                spec={},
                phase=phase,
                created_at=now,
                updated_at=now,
            )
        )
    return vm_id


def insert_disk(
    db: Database,
    vm_id: str,
    pool_id: str,
    size_gib: int = 1,
    *,
    disk_id: str | None = None,
    at: datetime | None = None,
) -> str:
    """A ``vm_disks`` row on ``pool_id`` (raises the store's FK error if the pool is gone)."""
    disk_id = disk_id or str(uuid.uuid4())
    now = at or datetime.now(UTC)
    with db.write() as conn:
        sql(conn).execute(
            vm_disks.insert().values(
                id=disk_id,
                vm_id=vm_id,
                storage_pool_id=pool_id,
                size_gib=size_gib,
                format="qcow2",
                created_at=now,
                updated_at=now,
            )
        )
    return disk_id


def add_vm_disk(
    db: Database, pool_id: str, vm_name: str, owner_id: str | None = None, phase: str = "stopped"
) -> str:
    """Insert a VM named ``vm_name`` with one disk on ``pool_id``; returns the VM id."""
    if owner_id is None:
        with db.read() as conn:
            first = sql(conn).execute(users.select()).first()
        assert first is not None, "no user to own the VM"
        owner_id = str(first.id)
    vm_id = insert_vm(db, owner_id, vm_name, phase=phase)
    insert_disk(db, vm_id, pool_id)
    return vm_id


def remove_vm_disks(db: Database, vm_id: str) -> None:
    with db.write() as conn:
        sql(conn).execute(vm_disks.delete().where(vm_disks.c.vm_id == vm_id))


#: The tables a create can write (rows, revisions, tasks, Idempotency-Key records).
WRITTEN_BY_CREATES = (
    "storage_pools",
    "pool_status",
    "vms",
    "vm_disks",
    "tasks",
    "idempotency_keys",
    "nodes",
    "cluster_settings",
)


#: Columns written behind the scenes by the liveness and heartbeat workers.
_VOLATILE = {"nodes": {"last_heartbeat_at", "status", "status_changed_at", "updated_at"}}


def snapshot(db: Database) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the tables a create can touch, sorted: equal snapshots mean
    nothing was written (a node's ``desired_revision`` is part of its row; the
    heartbeat times the workers flush in the background are left out)."""
    from otherix.store.schema import metadata

    out: dict[str, list[tuple[object, ...]]] = {}
    with db.read() as conn:
        for name in WRITTEN_BY_CREATES:
            table = metadata.tables[name]
            columns = [c for c in table.c if c.name not in _VOLATILE.get(name, set())]
            rows = sql(conn).execute(table.select().with_only_columns(*columns)).all()
            out[name] = sorted((tuple(r) for r in rows), key=repr)
    return out

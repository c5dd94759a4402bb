"""Store rows written directly by tests, for states a user reaches only through
a full agent round trip (a VM holding a disk on a pool)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from otherix.store import Database
from otherix.store.schema import users, vm_disks, vms
from otherix.store.tx import sql


def add_vm_disk(
    db: Database, pool_id: str, vm_name: str, owner_id: str | None = None, phase: str = "stopped"
) -> str:
    """Insert a VM named ``vm_name`` with one disk on ``pool_id``; returns the VM id."""
    now = datetime.now(UTC)
    vm_id = str(uuid.uuid4())
    with db.write() as conn:
        owner = owner_id or sql(conn).execute(users.select()).first().id
        sql(conn).execute(
            vms.insert().values(
                id=vm_id,
                name=vm_name,
                name_lower=vm_name.lower(),
                owner_id=owner,
                spec={},
                phase=phase,
                created_at=now,
                updated_at=now,
            )
        )
        sql(conn).execute(
            vm_disks.insert().values(
                id=str(uuid.uuid4()),
                vm_id=vm_id,
                storage_pool_id=pool_id,
                size_gib=1,
                format="qcow2",
                created_at=now,
                updated_at=now,
            )
        )
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

"""A pool delete racing many VM bindings never leaves a disk on a deleted pool.

Threads bind pending VMs to one pool (``placement.bind``, each its own
transaction, no process lock) while another deletes the pool (``pools.delete``,
what ``DELETE /v1/storage-pools/{id}`` calls); on SQLite and PostgreSQL, with
the background scheduler running too. Whoever wins, the store stays consistent: a VM has a
node exactly when it has its root disk and its vm.create task, and a deleted
pool has no disk and no bound VM.
"""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from test_vms_helpers import add_pool, create_vm, get_vm, place, ready_node

from otherix.api.services.placement import ask_of
from otherix.errors import Conflict
from otherix.store.pools import store as qp
from otherix.store.schema import storage_pools, tasks, vm_disks, vms
from otherix.store.tx import sql
from otherix.store.vms import store as qv

ROUNDS = 4
VMS = 6


def _ready(api, pool_id):
    """Mark the pool reconciled without a request (so the scheduler is not woken)."""
    with api.server.deps.db.write() as conn:
        qp.update_status(
            conn,
            pool_id,
            {
                "reconciliation_status": "ready",
                "capacity_bytes": 1 << 40,
                "available_bytes": 1 << 39,
            },
        )


def _race(api, pool, rows, n):
    """Binders and one delete start together; even rounds give the delete a head
    start, odd rounds the binders, so both outcomes occur."""
    placement, pools = api.server.services.placement_service, api.server.services.pool_service
    with api.server.deps.db.read() as conn:
        [candidate] = placement.load_candidates(conn, pool["id"])
    start = threading.Barrier(len(rows) + 1)
    outcomes: list[object] = []
    head_start = 0.003

    def bind(i, vm):
        start.wait()
        time.sleep(head_start * (n % 2 == 0) + 0.0005 * i)
        try:
            outcomes.append(placement.bind(vm, ask_of(vm), candidate))
        except Exception as exc:  # lost to the delete (or to another binder)
            outcomes.append(type(exc).__name__)

    def delete():
        start.wait()
        time.sleep(head_start * (n % 2 == 1))
        try:
            pools.delete(pool["id"])
        except Conflict as exc:
            outcomes.extend([409, (exc.details or {})["blocking_resources"]["vm_disks"]])
        else:
            outcomes.append(204)

    threads = [threading.Thread(target=bind, args=(i, vm)) for i, vm in enumerate(rows)]
    threads.append(threading.Thread(target=delete))
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcomes


def _check_consistent(api, pool_id, vm_ids):
    """Per VM, in one statement (one snapshot, even on PostgreSQL while the
    background scheduler runs): placed <=> one disk on this pool <=> one vm.create."""
    disks = sa.select(sa.func.count()).where(vm_disks.c.vm_id == vms.c.id).scalar_subquery()
    here = (
        sa.select(sa.func.count())
        .where(vm_disks.c.vm_id == vms.c.id, vm_disks.c.storage_pool_id == pool_id)
        .scalar_subquery()
    )
    creates = (
        sa.select(sa.func.count())
        .where(tasks.c.resource_id == vms.c.id, tasks.c.type == "vm.create")
        .scalar_subquery()
    )
    with api.server.deps.db.read() as conn:
        orphans = (
            sql(conn)
            .execute(
                sa.select(sa.func.count())
                .select_from(
                    vm_disks.outerjoin(
                        storage_pools, storage_pools.c.id == vm_disks.c.storage_pool_id
                    )
                )
                .where(storage_pools.c.id.is_(None))
            )
            .scalar_one()
        )
        assert orphans == 0
        rows = (
            sql(conn)
            .execute(
                sa.select(vms.c.name, vms.c.node_id, vms.c.task_id, disks, here, creates).where(
                    vms.c.id.in_(vm_ids)
                )
            )
            .all()
        )
        pool_alive = (
            sql(conn)
            .execute(sa.select(sa.func.count()).where(storage_pools.c.id == pool_id))
            .scalar_one()
        )
    bound = 0
    for name, node_id, task_id, n_disks, n_here, n_creates in rows:
        placed = node_id is not None
        expected = (1, 1, 1) if placed else (0, 0, 0)
        assert (n_disks, n_here, n_creates) == expected, name
        assert (task_id is not None) == placed, name
        bound += placed
    if not pool_alive:
        assert bound == 0
    return bool(pool_alive), bound


@pytest.mark.slow
def test_a_pool_delete_racing_bindings_never_leaves_a_disk_on_a_deleted_pool(api_any_backend):
    api = api_any_backend
    node = ready_node(api, "node-a")
    deleted_rounds = blocked_rounds = 0
    for n in range(ROUNDS):
        pool = add_pool(api, node, f"race{n}", state="pending")
        made = [create_vm(api, f"race{n}-vm{i}", pool=pool["id"]) for i in range(VMS)]
        _ready(api, pool["id"])
        with api.server.deps.db.read() as conn:
            rows = [r for vm in made if (r := qv.lock_vm(conn, vm["id"])) is not None]
        assert len(rows) == len(made)
        outcomes = _race(api, pool, rows, n)
        alive, bound = _check_consistent(api, pool["id"], [vm["id"] for vm in made])
        if 204 in outcomes:
            assert not alive
            deleted_rounds += 1
            place(api)  # the VMs that lost wait for an instance that is gone
            for vm in made:
                status = get_vm(api, vm["name"])["status"]
                assert (status["phase"], status["reason"]) == ("pending", "pool_not_found")
        else:
            assert alive
            assert 409 in outcomes
            blocking = outcomes[outcomes.index(409) + 1]
            assert 1 <= blocking <= bound  # the 409 counted disks committed before it
            blocked_rounds += 1
    assert deleted_rounds + blocked_rounds == ROUNDS

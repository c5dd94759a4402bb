"""``pool_capacity_samples`` (migration 0013, issue 16.6) on every backend: what the
sampler may sample, the idempotent insert on (pool, bucket), the bounded retention
delete, the read by pools and time, the cascade with the pool, the database clock,
and the migration from 0011 with data."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from otherix.store import Database, schema
from otherix.store.capacity import store as qc
from otherix.store.migrate import alembic_config, current_revision, upgrade
from otherix.store.nodes import store as qn
from otherix.store.pools import store as qp
from otherix.store.ports.capacity import CapacitySampleRow, SampleSource
from otherix.store.ports.nodes import NewNode
from otherix.store.ports.pools import NewPool
from otherix.store.tx import sql

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
USAGE: dict[str, Any] = {
    "vm_disk_bytes": 3,
    "vm_provisioned_bytes": 40,
    "image_cache_bytes": 7,
    "scratch_bytes": 0,
}


def add_node(db: Database, name: str, status: str = "ready", **columns: Any) -> str:
    nid = str(uuid.uuid4())
    with db.write() as conn:
        qn.insert_node(
            conn,
            NewNode(id=nid, name=name, architecture="amd64", credential_hash=nid, created_at=T0),
        )
        sql(conn).execute(
            schema.nodes.update().where(schema.nodes.c.id == nid).values(status=status, **columns)
        )
    return nid


def add_pool(db: Database, node_id: str, name: str, **status: Any) -> str:
    pid = str(uuid.uuid4())
    with db.write() as conn:
        qp.insert_pool(
            conn,
            NewPool(
                id=pid,
                node_id=node_id,
                name=name,
                type="local_dir",
                path=f"/var/lib/otherix/pools/{name}",
                config={},
                created_at=T0,
            ),
        )
        if status:
            qp.update_status(conn, pid, status)  # type: ignore[arg-type]
    return pid


def sample(pid: str, at: datetime, used: int = 10, **extra: Any) -> CapacitySampleRow:
    values: dict[str, Any] = {
        "capacity_bytes": 100,
        "vm_disk_bytes": None,
        "image_cache_bytes": None,
        **extra,
    }
    return CapacitySampleRow(pool_id=pid, sampled_at=at, used_bytes=used, **values)


READY = {"reconciliation_status": "ready", "capacity_bytes": 100, "available_bytes": 60}


def test_sources_are_ready_pools_with_numbers_on_ready_nodes(db):
    a = add_node(db, "a")
    down = add_node(db, "down", status="unreachable")
    gone = add_node(db, "gone", deleted_at=T0)
    good = add_pool(db, a, "good", **READY, usage=USAGE)
    add_pool(db, a, "pending")  # never reported
    add_pool(db, a, "failed", **{**READY, "reconciliation_status": "failed"})
    add_pool(db, a, "nocap", reconciliation_status="ready")
    add_pool(db, down, "stale", **READY)
    add_pool(db, gone, "orphan", **READY)
    with db.read() as conn:
        assert qc.sample_sources(conn) == [SampleSource(good, 100, 60, USAGE)]


def test_insert_is_idempotent_per_pool_and_bucket(db):
    a = add_node(db, "a")
    p1, p2 = add_pool(db, a, "p1"), add_pool(db, a, "p2")
    with db.write() as conn:
        assert qc.insert_samples(conn, [sample(p1, T0, 10), sample(p2, T0, 20)]) == 2
    # a second replica in the same bucket, with other numbers: nothing changes
    with db.write() as conn:
        assert qc.insert_samples(conn, [sample(p1, T0, 99), sample(p2, T0, 99)]) == 0
        assert qc.insert_samples(conn, []) == 0
    with db.write() as conn:
        later = T0 + timedelta(seconds=300)
        assert qc.insert_samples(conn, [sample(p1, T0, 5), sample(p1, later, 11)]) == 1
    with db.read() as conn:
        got = qc.samples(conn, [p1, p2])
    assert [(r.pool_id, r.sampled_at, r.used_bytes) for r in got] == sorted(
        [(p1, T0, 10), (p1, T0 + timedelta(seconds=300), 11), (p2, T0, 20)]
    )


def test_read_by_since_and_limit_oldest_first(db):
    a = add_node(db, "a")
    p = add_pool(db, a, "p")
    times = [T0 + timedelta(minutes=5 * i) for i in range(6)]
    with db.write() as conn:
        qc.insert_samples(
            conn,
            [sample(p, t, i, vm_disk_bytes=i, image_cache_bytes=2) for i, t in enumerate(times)],
        )
    with db.read() as conn:
        assert [r.used_bytes for r in qc.samples(conn, [p], since=times[2])] == [2, 3, 4, 5]
        assert [r.used_bytes for r in qc.samples(conn, [p], since=times[2], limit=2)] == [2, 3]
        assert qc.samples(conn, []) == []
        first = qc.samples(conn, [p], limit=1)[0]
    assert first == sample(p, times[0], 0, vm_disk_bytes=0, image_cache_bytes=2)
    assert first.sampled_at.tzinfo is not None


def test_retention_delete_is_bounded_and_oldest_first(db):
    a = add_node(db, "a")
    p1, p2 = add_pool(db, a, "p1"), add_pool(db, a, "p2")
    times = [T0 + timedelta(minutes=i) for i in range(5)]
    with db.write() as conn:
        qc.insert_samples(conn, [sample(p, t) for t in times for p in (p1, p2)])
    cutoff = times[3]  # six samples are older
    with db.write() as conn:
        assert qc.delete_before(conn, cutoff, limit=4) == 4
    with db.read() as conn:
        left = qc.samples(conn, [p1, p2])
    assert len(left) == 6
    assert min(r.sampled_at for r in left) == times[2]
    with db.write() as conn:
        assert qc.delete_before(conn, cutoff, limit=100) == 2
        assert qc.delete_before(conn, cutoff, limit=100) == 0
    with db.read() as conn:
        assert {r.sampled_at for r in qc.samples(conn, [p1, p2])} == {times[3], times[4]}


def test_samples_go_with_their_pool(db):
    a = add_node(db, "a")
    p1, p2 = add_pool(db, a, "p1"), add_pool(db, a, "p2")
    with db.write() as conn:
        qc.insert_samples(conn, [sample(p1, T0), sample(p2, T0)])
    with db.write() as conn:
        assert qp.delete_pool(conn, p1) == 1
    with db.read() as conn:
        assert [r.pool_id for r in qc.samples(conn, [p1, p2])] == [p2]


def test_db_now_is_the_servers_clock_on_postgresql_only(db):
    with db.read() as conn:
        now = qc.db_now(conn)
    if db.backend == "postgresql":
        assert now is not None
        assert now.tzinfo is not None
        assert abs((now - datetime.now(UTC)).total_seconds()) < 300
    else:
        assert now is None


@pytest.fixture
def at_0011(fresh_db: Database) -> Database:
    upgrade(fresh_db, "0011")
    return fresh_db


def test_migration_0013_from_0011_with_data(at_0011):
    db = at_0011
    nid, pid = str(uuid.uuid4()), str(uuid.uuid4())
    with db.write() as conn:
        qn.insert_node(
            conn, NewNode(id=nid, name="n", architecture=None, credential_hash=nid, created_at=T0)
        )
        sql(conn).execute(
            sa.text(
                "INSERT INTO storage_pools (id, node_id, name, name_lower, type, path, config, "
                "created_at, updated_at) VALUES (:id, :n, 'p', 'p', 'local_dir', '/x/p', '{}', "
                ":t, :t)"
            ),
            {"id": pid, "n": nid, "t": T0.replace(tzinfo=None)},
        )
        sql(conn).execute(
            sa.text(
                "INSERT INTO pool_status (pool_id, reconciliation_status, images, "
                "capacity_bytes, available_bytes) VALUES (:id, 'ready', '[]', 100, 40)"
            ),
            {"id": pid},
        )
    upgrade(db, "0013")
    assert current_revision(db) == "0013"
    with db.read() as conn:
        row = qp.get_pool(conn, pid)
        assert qc.samples(conn, [pid]) == []
    assert row is not None
    assert (row.capacity_bytes, row.available_bytes) == (100, 40)
    with db.write() as conn:
        assert qc.insert_samples(conn, [sample(pid, T0, 60)]) == 1
    with db.read() as conn:
        assert [r.used_bytes for r in qc.samples(conn, [pid])] == [60]
    command.downgrade(alembic_config(db), "0011")
    assert "pool_capacity_samples" not in sa.inspect(db.engine).get_table_names()
    with db.read() as conn:
        assert qp.get_pool(conn, pid) is not None  # the pool is untouched
    upgrade(db, "0013")
    assert current_revision(db) == "0013"

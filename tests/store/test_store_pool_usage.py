"""``pool_status.usage`` (migration 0010, issue 16) on every backend: written by a
status update, read back by every pool read, the ``/metrics`` query, and the
migration on an existing row."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from otherix.store import Database, schema
from otherix.store.migrate import alembic_config, current_revision, upgrade
from otherix.store.nodes import store as qn
from otherix.store.pools import store as qp
from otherix.store.ports.nodes import NewNode
from otherix.store.ports.pools import NewPool, PoolGaugeRow, PoolRow
from otherix.store.tx import sql

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
USAGE: dict[str, Any] = {
    "vm_disk_bytes": 3 << 30,
    "vm_provisioned_bytes": 40 << 30,
    "image_cache_bytes": 700 << 20,
    "scratch_bytes": 0,
}


def found(row: PoolRow | None) -> PoolRow:
    assert row is not None, "not found"
    return row


def add_node(db: Database, name: str, **columns: Any) -> str:
    nid = str(uuid.uuid4())
    with db.write() as conn:
        qn.insert_node(
            conn,
            NewNode(id=nid, name=name, architecture="amd64", credential_hash=nid, created_at=T0),
        )
        if columns:
            sql(conn).execute(
                schema.nodes.update().where(schema.nodes.c.id == nid).values(**columns)
            )
    return nid


def add_pool(db: Database, node_id: str, name: str) -> str:
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
    return pid


def test_usage_starts_null_and_reads_back_as_written(db):
    nid = add_node(db, "n1")
    pid = add_pool(db, nid, "p")
    with db.read() as conn:
        assert found(qp.get_pool(conn, pid)).usage is None
        assert qp.status_for_node(conn, nid)[0].usage is None
    with db.write() as conn:
        qp.update_status(conn, pid, {"usage": USAGE, "capacity_bytes": 100 << 30})
    with db.read() as conn:
        assert found(qp.get_pool(conn, pid)).usage == USAGE
        assert qp.get_pools_by_name(conn, "P")[0].usage == USAGE
        assert qp.list_pools(conn, after=None, limit=10)[0].usage == USAGE
        assert qp.status_for_node(conn, nid)[0].usage == USAGE


def test_gauges_cover_live_nodes_in_one_read(db):
    a = add_node(db, "node-a")
    b = add_node(db, "node-b")
    gone = add_node(db, "gone", deleted_at=T0)
    pa = add_pool(db, a, "fast")
    add_pool(db, b, "fast")
    add_pool(db, gone, "fast")
    with db.write() as conn:
        qp.update_status(
            conn,
            pa,
            {
                "usage": USAGE,
                "capacity_bytes": 100,
                "available_bytes": 10,
                "pressure_since": T0,
                "pressure_count": 3,
            },
        )
    with db.read() as conn:
        rows = qp.gauges(conn)
    assert rows == [
        PoolGaugeRow("fast", "node-a", 100, 10, True, USAGE),
        PoolGaugeRow("fast", "node-b", None, None, False, None),
    ]


@pytest.fixture
def at_0009(fresh_db: Database) -> Database:
    upgrade(fresh_db, "0009")
    return fresh_db


def test_migration_0010_adds_a_null_usage_and_downgrades(at_0009):
    db = at_0009
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
                "INSERT INTO pool_status (pool_id, reconciliation_status, images, capacity_bytes) "
                "VALUES (:id, 'ready', '[]', 7)"
            ),
            {"id": pid},
        )
    upgrade(db, "0010")
    assert current_revision(db) == "0010"
    upgrade(db)  # and on to the head, through 0011 (cordon, scrub)
    with db.read() as conn:
        row = qp.get_pool(conn, pid)
    assert row is not None
    assert row.usage is None
    assert row.capacity_bytes == 7
    command.downgrade(alembic_config(db), "0009")
    columns = {c["name"] for c in sa.inspect(db.engine).get_columns("pool_status")}
    assert "usage" not in columns
    upgrade(db, "0010")
    assert current_revision(db) == "0010"

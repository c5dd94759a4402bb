"""Migration 0006 (pool paths, default pool once, node events): what it does to old rows.

- Nodes that were ready before are marked as having had their default-pool
  step, so the upgrade provisions nothing anew (a pending node that never
  heartbeated is not marked and gets its default pool at its first promotion).
- Pool instances of deleted nodes that hold no VM disk are removed; those
  holding disks stay.
- Downgrade and upgrade again round-trip.

Then a real server on the upgraded database: the unreachable node comes back
without a new default pool, the never-seen one gets it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic import command

from otherix.api.services import secrets
from otherix.store import Database, schema
from otherix.store.migrate import alembic_config, current_revision, upgrade
from otherix.store.tx import sql
from support.server import ApiServer, make_settings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
USER = str(uuid.uuid4())


@pytest.fixture
def old_url(fresh_db: Database) -> str:
    """A database of its own at revision 0002 (before this migration), by URL."""
    upgrade(fresh_db, "0002")
    fresh_db.close()
    return fresh_db.url


def _node(conn, name: str, status: str, *, heartbeat: bool, deleted: bool = False) -> str:
    node_id = str(uuid.uuid4())
    sql(conn).execute(
        sa.text(
            "INSERT INTO nodes (id, name, name_lower, status, cordoned, architecture, "
            "credential_hash, desired_revision, created_at, updated_at, status_changed_at, "
            "last_heartbeat_at, deleted_at) VALUES (:id, :name, :name, :status, false, 'amd64', "
            ":cred, 1, :t, :t, :t, :hb, :del)"
        ),
        {
            "id": node_id,
            "name": name,
            "status": status,
            "cred": secrets.digest(f"otxn_{name}"),
            "t": T0.replace(tzinfo=None),
            "hb": T0.replace(tzinfo=None) if heartbeat else None,
            "del": T0.replace(tzinfo=None) if deleted else None,
        },
    )
    sql(conn).execute(
        sa.text(
            "INSERT INTO node_observed (node_id, capabilities, resources, updated_at) "
            "VALUES (:id, '{}', '{}', :t)"
        ),
        {"id": node_id, "t": T0.replace(tzinfo=None)},
    )
    return node_id


def _pool(conn, node_id: str, name: str) -> str:
    pool_id = str(uuid.uuid4())
    sql(conn).execute(
        sa.text(
            "INSERT INTO storage_pools (id, node_id, name, name_lower, type, path, config, "
            "created_at, updated_at) VALUES (:id, :node, :name, :name, 'local_dir', :path, "
            "'{}', :t, :t)"
        ),
        {
            "id": pool_id,
            "node": node_id,
            "name": name,
            "path": f"/var/lib/otherix/pools/{name}",
            "t": T0.replace(tzinfo=None),
        },
    )
    sql(conn).execute(
        sa.text(
            "INSERT INTO pool_status (pool_id, reconciliation_status, capacity_bytes, "
            "available_bytes, pressure_count, images) VALUES (:id, 'ready', 100, 90, 0, '[]')"
        ),
        {"id": pool_id},
    )
    return pool_id


def _disk(conn, pool_id: str) -> None:
    vm_id = str(uuid.uuid4())
    sql(conn).execute(
        sa.text(
            "INSERT INTO vms (id, name, name_lower, owner_id, spec, phase, created_at, "
            "updated_at) VALUES (:id, :id, :id, :owner, '{}', 'stopped', :t, :t)"
        ),
        {"id": vm_id, "owner": USER, "t": T0.replace(tzinfo=None)},
    )
    sql(conn).execute(
        sa.text(
            "INSERT INTO vm_disks (id, vm_id, storage_pool_id, device_order, size_gib, format, "
            "created_at, updated_at) VALUES (:id, :vm, :pool, 0, 1, 'qcow2', :t, :t)"
        ),
        {"id": str(uuid.uuid4()), "vm": vm_id, "pool": pool_id, "t": T0.replace(tzinfo=None)},
    )


def _seed(url: str) -> dict[str, str]:
    db = Database(url)
    try:
        with db.write() as conn:
            sql(conn).execute(
                sa.text(
                    "INSERT INTO users (id, username, username_lower, password_hash, role, "
                    "created_at, updated_at) VALUES (:id, 'u', 'u', 'x', 'admin', :t, :t)"
                ),
                {"id": USER, "t": T0.replace(tzinfo=None)},
            )
            ids = {
                "never": _node(conn, "never", "pending", heartbeat=False),
                "ready": _node(conn, "ready", "ready", heartbeat=True),
                "away": _node(conn, "away", "unreachable", heartbeat=True),
                "readmitted": _node(conn, "readmitted", "pending", heartbeat=True),
                "deleted": _node(conn, "deleted", "ready", heartbeat=True, deleted=True),
            }
            ids["live_pool"] = _pool(conn, ids["ready"], "kept")
            ids["orphan_empty"] = _pool(conn, ids["deleted"], "empty")
            ids["orphan_busy"] = _pool(conn, ids["deleted"], "busy")
            _disk(conn, ids["orphan_busy"])
    finally:
        db.close()
    return ids


def _state(url: str) -> tuple[dict[str, object], set[str], set[str]]:
    db = Database(url)
    try:
        with db.read() as conn:
            marks = {
                r["name"]: r["default_pool_provisioned_at"]
                for r in sql(conn).execute(sa.select(schema.nodes)).mappings()
            }
            pools = set(sql(conn).execute(sa.select(schema.storage_pools.c.id)).scalars())
            status = set(sql(conn).execute(sa.select(schema.pool_status.c.pool_id)).scalars())
    finally:
        db.close()
    return marks, pools, status


def test_0006_marks_nodes_that_were_ready_and_drops_empty_orphaned_pools(old_url):
    ids = _seed(old_url)
    db = Database(old_url)
    upgrade(db)
    db.close()
    marks, pools, status = _state(old_url)
    assert marks["never"] is None
    for name in ("ready", "away", "readmitted", "deleted"):
        assert marks[name] == T0, name  # status_changed_at
    assert pools == status == {ids["live_pool"], ids["orphan_busy"]}

    db = Database(old_url)
    command.downgrade(alembic_config(db), "0002")
    assert current_revision(db) == "0002"
    assert "node_events" not in sa.inspect(db.engine).get_table_names()
    upgrade(db)
    assert "node_events" in sa.inspect(db.engine).get_table_names()
    db.close()


def _heartbeat(url: str, name: str) -> httpx.Response:
    body = {
        "agent_version": "t",
        "architecture": "amd64",
        "revision": 0,
        "digest": hashlib.sha256(json.dumps([]).encode()).hexdigest(),
        "pools": [],
    }
    return httpx.post(
        f"{url}/v1/nodes/{name}/heartbeat",
        json=body,
        headers={"Authorization": f"Bearer otxn_{name}"},
        timeout=30,
    )


def test_after_0006_only_a_node_never_seen_gets_a_default_pool(old_url, tmp_path):
    ids = _seed(old_url)
    server = ApiServer(
        make_settings(
            tmp_path / "api",
            old_url,
            **{"storage_pools.allowed_path_prefixes": ["/var/lib/otherix/pools/"]},
        ),
        run_workers=False,
    ).start()  # the start runs the migration
    try:
        for name in ("never", "away", "readmitted"):
            assert _heartbeat(server.url, name).status_code == 200, name  # all promoted
        with server.deps.db.read() as conn:
            rows = (
                sql(conn)
                .execute(sa.select(schema.storage_pools.c.node_id, schema.storage_pools.c.name))
                .all()
            )
    finally:
        server.stop()
    by_node: dict[Any, list[str]] = {}
    for node_id, name in rows:
        by_node.setdefault(node_id, []).append(name)
    assert by_node[ids["never"]] == ["default"]
    assert ids["away"] not in by_node
    assert ids["readmitted"] not in by_node

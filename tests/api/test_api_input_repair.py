"""Rows stored before strict input: repaired by migration 0008 (text repair), and served
repaired if one is still met (SQLite, the backend that could store them).

Before the input boundary the API stored a lone surrogate as its JSON escape
(``"\\ud800"``) in SQLite's JSON columns, and afterwards every answer holding
it failed with 500: a developer's VM ``image_url`` bricked its node's
heartbeat and watch, a pool ``config`` broke ``pool list`` for everyone. The
rows here are written the way that old server wrote them: through the store's
own functions on an engine with SQLAlchemy's plain ``json.dumps``.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from apihelpers import (
    ADMIN,
    POOLS,
    ROLE_PASSWORD,
    Api,
    create_pool,
    heartbeat,
    http,
    pool_report,
    ready_node,
    serve,
)

from otherix.store import Database, Tx
from otherix.store.migrate import alembic_config, current_revision
from otherix.store.nodes import store as qn
from otherix.store.pools import store as qp
from otherix.store.tasks import store as qt
from otherix.store.vms import store as qv
from support.hostile import LONE, broken, nested, views

BAD_URL = f"http://images.invalid/{LONE}.img"
FIXED_URL = "http://images.invalid/\ufffd.img"
#: the revision before the text repair (0008): what a server before strict input ran
BEFORE_REPAIR = "0007"
JSON_COLUMNS = {
    "storage_pools": ("config",),
    "pool_status": ("images",),
    "node_observed": ("capabilities", "resources"),
    "tasks": ("args", "result", "error"),
    "vms": ("spec", "status_details"),
}


def build_cluster(api: Api) -> dict[str, Any]:
    """Two ready nodes with a ready default pool each, a tenant's pool, and a
    developer's VM placed on node-a (its vm.create task is node-a's desired state)."""
    ids: dict[str, Any] = {}
    for name in ("node-a", "node-b"):
        node = ready_node(api, name)
        assert heartbeat(api, node, [pool_report("default")]).status_code == 200
        ids[name] = node
    ids["pool"] = create_pool(api, ids["node-b"], "tenant-pool", POOLS + "tenant", config={"ok": 1})
    with http(api, "developer") as c:
        r = c.post(
            "/v1/vms",
            json={
                "name": "dev-vm",
                "image_url": "http://images.invalid/base.img",
                "arch": "amd64",
                "vcpus": 1,
                "memory_mb": 128,
                "pool": "default",
                "node": "node-a",
            },
        )
    assert r.status_code == 201, r.text
    vm = r.json()
    assert vm["node"] == "node-a", vm
    ids["vm"], ids["task"] = vm["id"], vm["status"]["task_id"]
    with http(api) as c:
        pools = c.get("/v1/storage-pools", params={"node": "node-a"}).json()["data"]
    ids["default-a"] = next(p["id"] for p in pools if p["name"] == "default")
    return ids


def write_bad_rows(url: str, ids: dict[str, Any]) -> None:
    """As the old server stored them: the store's functions, plain ``json.dumps``."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as raw:
            conn = Tx(raw)
            qp.update_pool(
                conn,
                ids["pool"]["id"],
                {"config": {"ok": 1, "a": LONE, LONE: [float("nan")], "deep": nested(300)}},
            )
            vm = qv.lock_vm(conn, ids["vm"])  # the bare row: the schema is 0007's here
            assert vm is not None
            qv.update_vm(conn, ids["vm"], {"spec": {**vm.spec, "image_url": BAD_URL}})
            task = qt.get_task(conn, ids["task"])
            assert task is not None
            qt.update_task(conn, ids["task"], {"args": {**task.args, "image_url": BAD_URL}})
            qn.update_observed(conn, ids["node-b"].id, {"capabilities": {"k": f"a{LONE}"}})
            image: dict[str, Any] = {
                "name": f"{LONE}.img",
                "sha256": "0" * 64,
                "size_bytes": 1,
                "format": "raw",
            }
            qp.update_status(
                conn,
                ids["default-a"],
                {"images": [image | {"imported_at": "2026-01-01T00:00:00Z"}]},
            )
            qn.bump_revision(conn, ids["node-a"].id)  # the node's desired state changed
    finally:
        engine.dispose()


def raw_json_texts(url: str) -> list[str]:
    """Every stored JSON value as the text in the database file."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [
                text
                for table, columns in JSON_COLUMNS.items()
                for column in columns
                for (text,) in conn.execute(sa.text(f"SELECT CAST({column} AS TEXT) FROM {table}"))
                if text is not None
            ]
    finally:
        engine.dispose()


def logged_in(api: Api) -> Api:
    return Api(
        api.server,
        {
            "admin": api.server.login(*ADMIN),
            "developer": api.server.login("developer", ROLE_PASSWORD),
        },
    )


def all_views(api: Api, ids: dict[str, Any]) -> dict[str, int]:
    out = {}
    for name in ("node-a", "node-b"):
        node = ids[name]
        for k, v in views(api.url, api.tokens, node.name, node.credential).items():
            out[f"{name}: {k}"] = v
    return out


def assert_served_repaired(api: Api, ids: dict[str, Any]) -> None:
    assert broken(all_views(api, ids)) == {}
    with http(api) as c:
        pool = c.get(f"/v1/storage-pools/{ids['pool']['id']}").json()
        assert pool["config"]["a"] == "\ufffd"
        assert pool["config"]["\ufffd"] == [None]
        default_a = c.get(f"/v1/storage-pools/{ids['default-a']}").json()
        assert default_a["images"][0]["name"] == "\ufffd.img"
        assert c.get("/v1/nodes/node-b").json()["capabilities"] == {"k": "a\ufffd"}
    with http(api, "developer") as c:
        assert c.get("/v1/vms/dev-vm").json()["image_url"] == FIXED_URL
    node = ids["node-a"]
    with http(api, token=node.credential) as c:
        r = c.get(f"/v1/nodes/{node.name}/watch", params={"revision": 0, "timeout": 0})
    tasks = [t for t in r.json()["desired"]["tasks"] if t["id"] == ids["task"]]
    assert tasks[0]["args"]["image_url"] == FIXED_URL


def test_migration_0008_repairs_rows_stored_before_strict_input(tmp_path, caplog):
    url = f"sqlite:///{tmp_path}/otherix.db"
    with serve(tmp_path / "api", url) as api:
        ids = build_cluster(api)
    db = Database(url)
    command.downgrade(alembic_config(db), BEFORE_REPAIR)
    assert current_revision(db) == BEFORE_REPAIR
    db.close()
    write_bad_rows(url, ids)
    stored = "\n".join(raw_json_texts(url))
    assert stored.count("\\ud800") == 6  # config value and key, spec, args, capabilities, images
    assert "NaN" in stored

    migrations = caplog.at_level(logging.INFO, "otherix.store.migrations")
    with migrations, serve(tmp_path / "api", url, roles=False) as api:
        head = ScriptDirectory.from_config(alembic_config(api.server.deps.db)).get_current_head()
        assert current_revision(api.server.deps.db) == head  # the head, through 0008
        assert_served_repaired(logged_in(api), ids)

    stored = "\n".join(raw_json_texts(url))
    assert "\\ud800" not in stored  # repaired at rest, not only on the way out
    assert "NaN" not in stored
    assert stored.count("\\ufffd") == 6
    repaired = [r.getMessage() for r in caplog.records if r.name == "otherix.store.migrations"]
    assert any("storage_pools.config of id " + ids["pool"]["id"] in m for m in repaired), repaired
    assert any(f"vms.spec of id {ids['vm']}" in m for m in repaired), repaired
    assert any(f"tasks.args of id {ids['task']}" in m for m in repaired), repaired
    assert any("node_observed.capabilities" in m for m in repaired), repaired
    assert any("pool_status.images" in m for m in repaired), repaired
    total = next(m for m in repaired if m.startswith("0008: stored JSON repaired"))
    assert "6 unpaired surrogate(s) replaced with U+FFFD" in total
    assert "1 NaN/Infinity replaced with null" in total
    assert "1 container(s) nested deeper than 64 kept as JSON text" in total


def test_a_bad_row_met_after_the_migration_is_served_repaired(tmp_path, caplog):
    """The belt to the migration's braces: a value written past the input boundary
    (here, straight into the database) degrades to U+FFFD; it never fails a list,
    another tenant's or another node's view, a heartbeat or a watch."""
    url = f"sqlite:///{tmp_path}/otherix.db"
    with serve(tmp_path / "api", url) as api:
        ids = build_cluster(api)
        write_bad_rows(url, ids)
        with caplog.at_level(logging.WARNING, "otherix.store"):
            assert_served_repaired(api, ids)
    assert any("unpaired surrogate" in r.getMessage() for r in caplog.records)


def test_the_store_never_writes_an_unpaired_surrogate(tmp_path):
    url = f"sqlite:///{tmp_path}/otherix.db"
    with serve(tmp_path / "api", url) as api:
        ids = build_cluster(api)
        with api.server.deps.db.write() as conn:
            qp.update_pool(conn, ids["pool"]["id"], {"config": {"a": LONE}})
    stored = "\n".join(raw_json_texts(url))
    assert "\\ud800" not in stored
    assert '{"a": "\\ufffd"}' in stored


def test_migration_0008_cuts_deep_values_on_both_backends(tmp_path, db_url, caplog):
    """PostgreSQL refused surrogates and NaN, but its JSONB kept 300 levels of nesting,
    which broke every list holding the row (the serialiser stops at about 250)."""
    with serve(tmp_path / "api", db_url) as api:
        node = ready_node(api, "deep-node")
        pool = create_pool(api, node, "deep-pool", POOLS + "deep", config={"ok": 1})
    db = Database(db_url)
    command.downgrade(alembic_config(db), BEFORE_REPAIR)
    db.close()
    engine = sa.create_engine(db_url)  # as the old server wrote it
    try:
        with engine.begin() as raw:
            qp.update_pool(Tx(raw), pool["id"], {"config": {"ok": 1, "deep": nested(300)}})
    finally:
        engine.dispose()
    migrations = caplog.at_level(logging.WARNING, "otherix.store.migrations")
    with migrations, serve(tmp_path / "api", db_url, roles=False) as api:
        token = api.server.login(*ADMIN)
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"}) as c:
            listed = c.get("/v1/storage-pools", params={"node": "deep-node"})
            assert listed.status_code == 200, listed.text
            config = c.get(f"/v1/storage-pools/{pool['id']}").json()["config"]
    assert config["ok"] == 1
    value = config["deep"]
    for _ in range(63):  # the column's object is level 1, "deep"'s arrays 2..301
        value = value[0]
    assert isinstance(value, str)  # level 65 on is kept as its JSON text
    assert value.count("[") == 300 - 63
    assert any(f"storage_pools.config of id {pool['id']}" in r.getMessage() for r in caplog.records)

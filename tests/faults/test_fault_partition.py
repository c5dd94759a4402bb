"""A network partition between one node and the control plane, and its healing.

Two real agents, each in its own network and mount namespace (harness
``net_ns=True``; root only), against a control plane listening on 0.0.0.0.
Node ``part-a`` gets three pools besides its default one, each with a file
written into its ``images/`` directory; then its link is taken down. While
it is cut off (the control plane shows it ``unreachable``; ``part-b`` stays
``ready``), a pool is created for it and one of its pools is deleted: the API
accepts both for an unreachable node (``services/pools.py`` checks that the
node exists, not that it is reachable). The link comes back and the node must
catch up on its own: ``ready`` again, the new pool reconciled ``ready`` and
materialised on its disk, the deleted one gone from the API and the store
(its files stay on disk: the agent never deletes pool data, see
docs/architecture.md "Storage pools"), and every other pool row exactly as it
was, with its directories and files intact.
"""

from __future__ import annotations

import os
import secrets

import pytest
import sqlalchemy as sa

from otherix.store.schema import pool_status, storage_pools
from otherix.store.tx import sql
from support.harness import FAST, NODE_ROOT, Cluster, ControlPlane

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(180),
]

NODE, BYSTANDER = "part-a", "part-b"
BEFORE = ["keep-1", "keep-2", "doomed"]
DURING = "during"
#: What must not change on a pool row the partition did not touch.
ROW_KEYS = ("id", "name", "node", "type", "path", "config", "created_at", "updated_at")
LAYOUT = ["images", "scratch", "vms"]


def _path(name: str) -> str:
    return f"{NODE_ROOT}/pools/{name}"


def _create(cluster: Cluster, name: str) -> dict:
    r = cluster.admin.post(
        "/v1/storage-pools",
        json={"node": NODE, "name": name, "type": "local_dir", "path": _path(name)},
    )
    assert r.status_code == 201, r.text
    return r.json()


def _store_rows(cp: ControlPlane, pool_id: str) -> tuple[int, int]:
    assert cp.server is not None
    with cp.server.deps.db.read() as conn:
        pools = (
            sql(conn)
            .execute(sa.select(sa.func.count()).where(storage_pools.c.id == pool_id))
            .scalar_one()
        )
        statuses = (
            sql(conn)
            .execute(sa.select(sa.func.count()).where(pool_status.c.pool_id == pool_id))
            .scalar_one()
        )
    return int(pools), int(statuses)


def test_partitioned_node_catches_up_after_heal_and_loses_nothing(tmp_path, reliability) -> None:
    cp = ControlPlane(tmp_path / "api", host="0.0.0.0", overrides=FAST).start()
    try:
        with Cluster(cp, tmp_path) as cluster:
            node = cluster.add_node(NODE, net_ns=True)
            cluster.add_node(BYSTANDER, net_ns=True)
            for name in (NODE, BYSTANDER):
                cluster.wait_node_status(name, "ready", timeout=15)
            for name in BEFORE:
                _create(cluster, name)
            markers: dict[str, str] = {}
            for name in ["default", *BEFORE]:
                cluster.wait_pool_status(NODE, name, "ready", timeout=15)
                markers[name] = secrets.token_hex(16)
                (node.host_path(_path(name)) / "images" / "marker").write_text(markers[name])
            rows_before = {p["name"]: {k: p[k] for k in ROW_KEYS} for p in cluster.pools(NODE)}
            doomed_id = rows_before["doomed"]["id"]

            # --- partition ------------------------------------------------------------
            node.partition()
            cluster.wait_node_status(NODE, "unreachable", timeout=15)
            bystander_status = cluster.node(BYSTANDER)["status"]
            during = _create(cluster, DURING)
            deleted = cluster.admin.delete(f"/v1/storage-pools/{doomed_id}")
            # the node cannot have heard of either change while cut off
            status_while_cut = cluster.node(NODE)["status"]
            during_seen_while_cut = node.host_path(_path(DURING)).exists()
            during_status_while_cut = cluster.pool(NODE, DURING)

            # --- heal -------------------------------------------------------------------
            node.heal()
            cluster.wait_node_status(NODE, "ready", timeout=30)
            cluster.wait_pool_status(NODE, DURING, "ready", timeout=30)
            pools_after = {p["name"]: p for p in cluster.pools(NODE)}
            doomed_get = cluster.admin.get(f"/v1/storage-pools/{doomed_id}").status_code
            doomed_store = _store_rows(cp, doomed_id)
            changed = sorted(
                name
                for name, row in rows_before.items()
                if name != "doomed"
                and (name not in pools_after or {k: pools_after[name][k] for k in ROW_KEYS} != row)
            )
            not_ready = sorted(
                n for n, p in pools_after.items() if p["reconciliation_status"] != "ready"
            )
            layout_missing = sorted(
                f"{name}/{sub}"
                for name in ["default", "keep-1", "keep-2", DURING]
                for sub in LAYOUT
                if not (node.host_path(_path(name)) / sub).is_dir()
            )
            files_lost = sorted(
                name
                for name, text in markers.items()
                if not (marker := node.host_path(_path(name)) / "images" / "marker").is_file()
                or marker.read_text() != text
            )
            bystander_after = cluster.node(BYSTANDER)["status"]
    finally:
        cp.stop()

    lost = len(set(changed) | set(files_lost)) + int(DURING not in pools_after)
    healed = status_while_cut == "unreachable" and not not_ready and not layout_missing
    reliability.record(
        "network partition of a node, pools created and deleted meanwhile",
        injected=1,
        survived=int(healed and lost == 0),
        checked=len(rows_before) + 1,  # the pools before, plus the one created while cut off
        lost=lost,
        detail=(
            "veth link down until the node is unreachable; one create and one delete "
            "meanwhile; after heal: rows, directories and files compared"
        ),
    )

    assert bystander_status == "ready", "the partition reached the other node"
    assert during["reconciliation_status"] == "pending"
    assert deleted.status_code == 204, deleted.text
    assert status_while_cut == "unreachable"
    assert not during_seen_while_cut, "the partitioned node materialised a pool it cannot know of"
    assert during_status_while_cut is not None
    assert during_status_while_cut["reconciliation_status"] == "pending"
    assert sorted(pools_after) == sorted(["default", "keep-1", "keep-2", DURING])
    assert not_ready == []
    assert changed == [], "pool rows the partition did not touch have changed"
    assert layout_missing == []
    assert files_lost == [], "files in pool directories were lost"
    assert doomed_get == 404
    assert doomed_store == (0, 0)
    assert node.host_path(_path("doomed")).is_dir()  # the data stays; only the declaration went
    assert pools_after[DURING]["id"] == during["id"]
    assert bystander_after == "ready"

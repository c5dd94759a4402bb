"""Pool identity through the real API: what the desired state declares, what the
control plane records from reports, the views (``reconciliation_reason``,
``vm_disks``, ``disk_missing``), ``POST /v1/storage-pools/{id}/reinit`` and the
``0007`` (pool identity) migration of existing rows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from apihelpers import (
    Node,
    assert_error,
    create_pool,
    get_pool,
    heartbeat,
    http,
    insert_disk,
    insert_vm,
    join_node,
    pool_report,
)

from otherix.store import Database, schema
from otherix.store.migrate import upgrade
from otherix.store.tx import sql

IDENTITY = ("pool_missing", "pool_identity_mismatch", "pool_device_changed")


def declared(api, node: Node, name: str) -> dict[str, Any]:
    r = heartbeat(api, node)
    assert r.status_code == 200, r.text
    pools = r.json()["desired"]["declared_pools"]
    return next(p for p in pools if p["name"] == name)


def report(api, node: Node, name: str, status: str = "ready", **fields: Any) -> dict[str, Any]:
    rep = pool_report(name, status, capacity=None if status == "failed" else 1000)
    if status == "failed":
        rep.pop("available_bytes", None)
    rep.update(fields)
    r = heartbeat(api, node, [rep])
    assert r.status_code == 200, r.text
    return r.json()


def failed(api, node: Node, name: str, reason: str = "pool_missing") -> None:
    report(
        api,
        node,
        name,
        "failed",
        reconciliation_error=f"{name}: gone",
        reconciliation_reason=reason,
    )


def reinit(api, ref: str, role: str = "admin"):
    with http(api, role) as c:
        return c.post(f"/v1/storage-pools/{ref}/reinit")


def made_vm(api, pool_id: str, node: Node, name: str, phase: str = "stopped") -> str:
    """A VM with a made root disk on the pool (file_path set), written through the store."""
    vm_id = insert_vm(api, name=name)
    disk_id = insert_disk(api, vm_id, pool_id)
    with api.server.deps.db.write() as conn:
        sql(conn).execute(
            schema.vms.update().where(schema.vms.c.id == vm_id).values(phase=phase, node_id=node.id)
        )
        sql(conn).execute(
            schema.vm_disks.update()
            .where(schema.vm_disks.c.id == disk_id)
            .values(file_path=f"/var/lib/otherix/pools/x/vms/{vm_id}/disk.qcow2")
        )
    return disk_id


def get_vm(api, name: str, role: str = "admin") -> dict[str, Any]:
    with http(api, role) as c:
        r = c.get(f"/v1/vms/{name}")
    assert r.status_code == 200, r.text
    return r.json()


def bump(api, node: Node) -> None:
    """What every transaction that changes a node's disks does (task outcomes, deletes)."""
    from otherix.store.nodes import store as qn

    with api.server.deps.db.write() as conn:
        qn.bump_revision(conn, node.id)


# --- desired state and reports ----------------------------------------------------------


def test_declared_pools_carry_the_identity(api):
    node = join_node(api)
    pool = create_pool(api, node, "ident")
    d = declared(api, node, "ident")
    assert d["id"] == pool["id"]
    assert d["cluster_id"] == api.server.deps.cluster_id != ""
    assert d["identity"] == "create"
    uuid.UUID(d["marker_id"])
    assert d["created_at"].startswith(pool["created_at"][:19])
    assert d["disks"] == []


def test_a_ready_report_with_the_marker_makes_the_marker_required(api_any_backend):
    api = api_any_backend
    node = join_node(api)
    create_pool(api, node, "rec")
    d = declared(api, node, "rec")
    # a ready report with some other marker (a stale agent) records nothing
    reply = report(api, node, "rec", marker_id=str(uuid.uuid4()))
    revision = reply["desired"]["revision"]
    assert declared(api, node, "rec")["identity"] == "create"
    reply = report(api, node, "rec", marker_id=d["marker_id"])
    assert reply["desired"]["revision"] > revision  # the reply itself carries the change
    [mine] = [p for p in reply["desired"]["declared_pools"] if p["name"] == "rec"]
    assert mine["identity"] == "verify"
    assert mine["marker_id"] == d["marker_id"]


def test_reason_shown_while_failed_and_cleared_when_ready(api):
    node = join_node(api)
    pool = create_pool(api, node, "reason")
    failed(api, node, "reason", "pool_identity_mismatch")
    view = get_pool(api, pool["id"], "viewer").json()
    assert view["reconciliation_status"] == "failed"
    assert view["reconciliation_reason"] == "pool_identity_mismatch"
    assert view["reconciliation_error"] == "reason: gone"
    concept = get_pool(api, "reason").json()
    assert concept["instances"][0]["reconciliation_reason"] == "pool_identity_mismatch"
    report(api, node, "reason", marker_id=declared(api, node, "reason")["marker_id"])
    view = get_pool(api, pool["id"]).json()
    assert (view["reconciliation_status"], view["reconciliation_reason"]) == ("ready", None)


def test_a_report_reason_must_be_a_code(api):
    node = join_node(api)
    create_pool(api, node, "badreason")
    rep = pool_report("badreason", "failed", capacity=None, available=None)
    rep["reconciliation_reason"] = "pool_missing"
    assert heartbeat(api, node, [rep]).status_code == 200
    rep["reconciliation_reason"] = "Not A Code!"
    assert_error(heartbeat(api, node, [rep]), 400, "validation_failed")


# --- VM disks ----------------------------------------------------------------------------


def test_made_disks_are_declared_and_missing_ones_counted(api_any_backend):
    api = api_any_backend
    node = join_node(api)
    pool = create_pool(api, node, "disks")
    d1 = made_vm(api, pool["id"], node, "vm-ok")
    d2 = made_vm(api, pool["id"], node, "vm-lost")
    made_vm(api, pool["id"], node, "vm-going", phase="deleting")  # not checked
    insert_disk(api, insert_vm(api, name="vm-unmade"), pool["id"])  # no file yet: not checked
    bump(api, node)
    d = declared(api, node, "disks")
    assert sorted(x["id"] for x in d["disks"]) == sorted([d1, d2])
    assert all(x["file_path"].endswith("/disk.qcow2") for x in d["disks"])
    report(api, node, "disks", marker_id=d["marker_id"], missing_disks=[d2])
    view = get_pool(api, pool["id"], "viewer").json()
    assert view["reconciliation_status"] == "ready"
    assert view["vm_disks"] == {"total": 4, "missing": 1}
    lost = get_vm(api, "vm-lost", "viewer")
    assert lost["status"]["phase"] == "stopped"
    assert lost["status"]["reason"] == "disk_missing"
    assert lost["status"]["details"]["cause"] == "file_missing"
    [disk] = lost["disks"]
    assert (disk["missing"], disk["missing_reason"]) == (True, "file_missing")
    assert disk["missing_since"] is not None
    assert disk["file_path"] is None  # viewers never see host paths
    ok = get_vm(api, "vm-ok", "viewer")
    assert ok["status"]["reason"] is None
    assert ok["disks"][0]["missing"] is False
    with http(api) as c:
        data = c.get("/v1/vms", params={"limit": 200}).json()["data"]
    listed = {v["name"]: v["status"] for v in data}
    assert listed["vm-lost"]["reason"] == "disk_missing"
    assert listed["vm-ok"]["reason"] is None
    # the file is back
    report(api, node, "disks", marker_id=d["marker_id"], missing_disks=[])
    assert get_pool(api, pool["id"]).json()["vm_disks"] == {"total": 4, "missing": 0}
    assert get_vm(api, "vm-lost")["status"]["reason"] is None


def test_every_made_disk_of_a_failed_pool_is_missing_and_summed_by_name(api_any_backend):
    api = api_any_backend
    a, b = join_node(api, "id-node-a"), join_node(api, "id-node-b")
    on_a = create_pool(api, a, "twice")
    on_b = create_pool(api, b, "twice", "/var/lib/otherix/pools/twice-b")
    made_vm(api, on_a["id"], a, "vm-a1")
    made_vm(api, on_a["id"], a, "vm-a2")
    made_vm(api, on_b["id"], b, "vm-b1")
    failed(api, a, "twice", "pool_identity_mismatch")
    assert get_pool(api, on_a["id"]).json()["vm_disks"] == {"total": 2, "missing": 2}
    assert get_pool(api, on_b["id"]).json()["vm_disks"] == {"total": 1, "missing": 0}
    concept = get_pool(api, "twice").json()
    assert concept["vm_disks"] == {"total": 3, "missing": 2}
    vm = get_vm(api, "vm-a1")
    assert vm["status"]["reason"] == "disk_missing"
    assert vm["status"]["details"] == {
        "pool": "twice",
        "pool_id": on_a["id"],
        "cause": "pool_failed",
        "pool_reason": "pool_identity_mismatch",
    }
    assert "pool_identity_mismatch" in vm["status"]["message"]
    assert vm["disks"][0]["missing_reason"] == "pool_failed"
    assert vm["disks"][0]["file_path"].endswith("disk.qcow2")  # admins see paths
    assert get_vm(api, "vm-b1")["status"]["reason"] is None


# --- reinit -----------------------------------------------------------------------------


def identity_row(api, pool_id: str) -> tuple[str, str, str]:
    with api.server.deps.db.read() as conn:
        row = (
            sql(conn)
            .execute(
                sa.select(
                    schema.pool_status.c.identity_mode,
                    schema.pool_status.c.marker_id,
                    schema.pool_status.c.reconciliation_status,
                ).where(schema.pool_status.c.pool_id == pool_id)
            )
            .one()
        )
    return tuple(row)


@pytest.mark.parametrize("reason", IDENTITY)
def test_reinit_starts_an_identity_failed_pool_afresh(api, reason):
    node = join_node(api)
    pool = create_pool(api, node, f"re-{reason[5:9]}")
    name = pool["name"]
    before = declared(api, node, name)
    report(api, node, name, marker_id=before["marker_id"])
    failed(api, node, name, reason)
    r = reinit(api, pool["id"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == pool["id"]
    assert body["reconciliation_status"] == "pending"
    assert body["reconciliation_reason"] is None
    assert body["reconciliation_error"] is None
    after = declared(api, node, name)
    assert after["identity"] == "create"
    assert after["marker_id"] != before["marker_id"]
    # the agent writes the new marker and reports ready: verify again
    report(api, node, name, marker_id=after["marker_id"])
    assert declared(api, node, name)["identity"] == "verify"


def test_reinit_by_unique_name(api):
    node = join_node(api)
    create_pool(api, node, "re-byname")
    failed(api, node, "re-byname")
    r = reinit(api, "re-byname")
    assert r.status_code == 200, r.text
    assert r.json()["reconciliation_status"] == "pending"


def test_reinit_refused_while_vm_disks_reference_the_pool(api_any_backend):
    api = api_any_backend
    node = join_node(api)
    pool = create_pool(api, node, "re-disks")
    made_vm(api, pool["id"], node, "vm-keep")
    failed(api, node, "re-disks")
    before = identity_row(api, pool["id"])
    err = assert_error(reinit(api, pool["id"]), 409, "conflict")
    assert err["details"] == {"blocking_resources": {"vm_disks": 1}}
    assert identity_row(api, pool["id"]) == before


@pytest.mark.parametrize(
    ("status", "reason"), [("ready", None), ("failed", "pool_unusable"), ("pending", None)]
)
def test_reinit_refused_for_a_pool_without_an_identity_failure(api, status, reason):
    node = join_node(api)
    name = f"re-{status}"
    pool = create_pool(api, node, name)
    if status == "ready":
        report(api, node, name, marker_id=declared(api, node, name)["marker_id"])
    elif status == "failed":
        failed(api, node, name, "pool_unusable")
    before = identity_row(api, pool["id"])
    err = assert_error(reinit(api, pool["id"]), 409, "conflict")
    assert err["details"] == {
        "reason": "pool_not_failed",
        "current_status": status,
        "reconciliation_reason": reason,
    }
    assert "identity check failed" in err["message"]
    assert identity_row(api, pool["id"]) == before


@pytest.mark.parametrize("role", ["viewer", "operator", "developer"])
def test_reinit_needs_storage_pool_manage(api, role):
    node = join_node(api)
    pool = create_pool(api, node, f"re-rbac-{role}")
    failed(api, node, pool["name"])
    before = identity_row(api, pool["id"])
    err = assert_error(reinit(api, pool["id"], role), 403, "permission_denied")
    assert err["details"] == {"required": "storage_pool:manage"}
    assert identity_row(api, pool["id"]) == before


def test_reinit_bad_references(api):
    a, b = join_node(api), join_node(api)
    create_pool(api, a, "re-amb")
    create_pool(api, b, "re-amb", "/var/lib/otherix/pools/re-amb-b")
    assert_error(reinit(api, str(uuid.uuid4())), 404, "not_found")
    assert_error(reinit(api, "no-such-pool"), 404, "not_found")
    err = assert_error(reinit(api, "re-amb"), 400, "pool_name_ambiguous")
    assert len(err["details"]["instances"]) == 2
    with http(api, None) as anon:
        assert_error(anon.post(f"/v1/storage-pools/{uuid.uuid4()}/reinit"), 401, "unauthenticated")


# --- migration 0007 (pool identity) --------------------------------------------------------------


@pytest.fixture
def old_db(fresh_db: Database) -> Database:
    """A database of its own at revision 0002 (before pool identity)."""
    upgrade(fresh_db, "0002")
    return fresh_db


def test_migration_adopts_pools_that_were_ready_and_creates_the_rest(old_db):
    now = datetime.now(UTC)
    node_id = str(uuid.uuid4())
    rows = {"was-ready": ("ready", 10), "was-failed": ("failed", 10), "never": ("pending", None)}
    with old_db.write() as conn:
        sql(conn).execute(
            schema.nodes.insert().values(
                id=node_id,
                name="n",
                name_lower="n",
                status="ready",
                credential_hash="x" * 64,
                created_at=now,
                updated_at=now,
                status_changed_at=now,
            )
        )
        for name, (status, capacity) in rows.items():
            pool_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, name))
            sql(conn).execute(
                sa.text(
                    "INSERT INTO storage_pools (id, node_id, name, name_lower, type, path, config,"
                    " created_at, updated_at) VALUES (:id, :node, :name, :name, 'local_dir', :path,"
                    " '{}', :now, :now)"
                ),
                {"id": pool_id, "node": node_id, "name": name, "path": f"/p/{name}", "now": now},
            )
            sql(conn).execute(
                sa.text(
                    "INSERT INTO pool_status (pool_id, reconciliation_status, capacity_bytes,"
                    " pressure_count, images) VALUES (:id, :status, :cap, 0, '[]')"
                ),
                {"id": pool_id, "status": status, "cap": capacity},
            )
    upgrade(old_db)
    with old_db.read() as conn:
        got = {
            r.name: (r.identity_mode, r.marker_id, r.reconciliation_reason)
            for r in sql(conn).execute(
                sa.select(
                    schema.storage_pools.c.name,
                    schema.pool_status.c.identity_mode,
                    schema.pool_status.c.marker_id,
                    schema.pool_status.c.reconciliation_reason,
                ).select_from(
                    schema.storage_pools.join(
                        schema.pool_status,
                        schema.pool_status.c.pool_id == schema.storage_pools.c.id,
                    )
                )
            )
        }
    assert {k: v[0] for k, v in got.items()} == {
        "was-ready": "adopt",
        "was-failed": "adopt",  # it had reported capacity: it was materialised once
        "never": "create",
    }
    assert len({v[1] for v in got.values()}) == 3  # a marker id each
    assert all(uuid.UUID(v[1]) for v in got.values())
    assert all(v[2] is None for v in got.values())

"""``POST /v1/storage-pools?dry_run=true`` and ``POST /v1/vms?dry_run=true``.

A dry run answers what the create would answer (200 with the would-be object,
or the very refusal a create gets) and writes nothing: the store is compared
row by row before and after (pools, VMs, disks, tasks, node revisions,
Idempotency-Key records).
"""

from __future__ import annotations

import pytest
from apihelpers import (
    DUPLICATE,
    assert_error,
    create_pool,
    heartbeat,
    http,
    join_node,
    pool_body,
    pool_report,
    ready_node,
)

from support.rows import snapshot

DRY = {"dry_run": "true"}
IMAGE = "https://images.example/ubuntu.img"


def store(api):
    return snapshot(api.server.deps.db)


def post_pool(api, body, *, dry: bool, role: str = "admin", headers=None):
    with http(api, role) as c:
        return c.post("/v1/storage-pools", json=body, params=DRY if dry else None, headers=headers)


def post_vm(api, body, *, dry: bool, role: str = "developer", headers=None):
    full = {"arch": "amd64", "vcpus": 1, "memory_mb": 512, **body}
    with http(api, role) as c:
        return c.post("/v1/vms", json=full, params=DRY if dry else None, headers=headers)


def test_a_pool_dry_run_answers_the_would_be_pool_and_writes_nothing(api_any_backend):
    api = api_any_backend
    node = join_node(api, "node-a")
    before = store(api)
    key = {"Idempotency-Key": "dry-1"}
    r = post_pool(api, pool_body(node, "fast"), dry=True, headers=key)
    assert r.status_code == 200, r.text
    pool = r.json()
    assert (pool["name"], pool["node"], pool["path"]) == (
        "fast",
        "node-a",
        "/var/lib/otherix/pools/fast",
    )
    assert pool["reconciliation_status"] == "pending"
    assert store(api) == before  # no row, no revision bump, no Idempotency-Key record
    # Nothing was reserved: the same request (and key) really creates it now.
    real = post_pool(api, pool_body(node, "fast"), dry=False, headers=key)
    assert real.status_code == 201, real.text
    assert real.json()["id"] != pool["id"]
    assert "idempotent-replay" not in real.headers


REFUSALS = [
    # (body change, status, code): the same answer a real create gets
    ({"node": "node-9"}, 404, "not_found"),
    ({"path": "/etc/otherix"}, 400, "path_not_allowed"),
    ({"path": "relative/path"}, 400, "validation_failed"),
    ({"name": "Bad Name!"}, 400, "validation_failed"),
    ({"bogus": 1}, 400, "validation_failed"),
]


@pytest.mark.parametrize(("change", "status", "code"), REFUSALS)
def test_a_pool_dry_run_refuses_what_a_create_refuses(api, change, status, code):
    join_node(api, "node-a")
    body = {**pool_body("node-a", "fast"), **change}
    before = store(api)
    dry = post_pool(api, body, dry=True)
    assert_error(dry, status, code)
    assert store(api) == before
    real = post_pool(api, body, dry=False)
    assert (real.status_code, real.json()) == (dry.status_code, dry.json())
    # without the problem the dry run accepts it, and still writes nothing
    assert post_pool(api, pool_body("node-a", "fast"), dry=True).status_code == 200
    assert store(api) == before


def test_a_pool_dry_run_sees_the_stores_own_uniqueness(api_any_backend):
    api = api_any_backend
    node = join_node(api, "node-a")
    create_pool(api, node, "fast")
    before = store(api)
    for name in ("fast", "FAST"):
        r = post_pool(api, pool_body(node, name, "/var/lib/otherix/pools/other"), dry=True)
        assert_error(r, 409, "conflict", DUPLICATE, {"field": "name"})
    other = post_pool(api, pool_body(node, "other", "/var/lib/otherix/pools/other"), dry=True)
    assert other.status_code == 200, other.text
    assert store(api) == before


def test_a_pool_dry_run_needs_the_create_permission(api):
    join_node(api, "node-a")
    before = store(api)
    for role in ("operator", "developer", "viewer"):
        r = post_pool(api, pool_body("node-a", "fast"), dry=True, role=role)
        assert_error(r, 403, "permission_denied")
    assert post_pool(api, pool_body("node-a", "fast"), dry=True).status_code == 200  # admin
    assert store(api) == before


def test_a_pool_dry_run_with_a_false_value_is_a_real_create(api):
    join_node(api, "node-a")
    with http(api) as c:
        r = c.post(
            "/v1/storage-pools", json=pool_body("node-a", "fast"), params={"dry_run": "false"}
        )
    assert r.status_code == 201, r.text


def ready_default(api, name: str) -> None:
    """A ready node whose ``default`` pool (the cluster default) is reconciled ready."""
    node = ready_node(api, name)
    room = pool_report("default", capacity=100 << 30, available=50 << 30)
    assert heartbeat(api, node, [room]).status_code == 200


def test_a_vm_dry_run_shows_where_it_would_land_and_writes_nothing(api_any_backend):
    api = api_any_backend
    ready_default(api, "node-a")
    before = store(api)
    key = {"Idempotency-Key": "vm-dry"}
    r = post_vm(api, {"name": "web-1", "image_url": IMAGE}, dry=True, headers=key)
    assert r.status_code == 200, r.text
    vm = r.json()
    assert (vm["name"], vm["pool"], vm["node"]) == ("web-1", "default", "node-a")
    assert vm["status"]["phase"] == "pending"
    assert vm["status"]["task_id"] is None  # no vm.create task was made
    assert store(api) == before
    real = post_vm(api, {"name": "web-1", "image_url": IMAGE}, dry=False, headers=key)
    assert real.status_code == 201, real.text
    assert real.json()["node"] == "node-a"


def test_a_vm_dry_run_says_why_it_would_stay_pending(api):
    join_node(api, "node-a")
    before = store(api)
    r = post_vm(api, {"name": "web-1", "image_url": IMAGE, "pool": "ghost"}, dry=True)
    assert r.status_code == 200, r.text
    status = r.json()["status"]
    assert (status["phase"], status["reason"]) == ("pending", "pool_not_found")
    assert status["message"] == 'pool "ghost" not found in cluster'
    assert store(api) == before


def test_a_vm_dry_run_refuses_what_admission_refuses(api):
    ready_node(api, "node-a")
    assert post_vm(api, {"name": "web-1", "image_url": IMAGE}, dry=False).status_code == 201
    before = store(api)
    taken = post_vm(api, {"name": "WEB-1", "image_url": IMAGE}, dry=True)
    assert_error(taken, 409, "vm_name_in_use")
    bad_url = post_vm(api, {"name": "web-2", "image_url": "ftp://x/y.img"}, dry=True)
    assert_error(bad_url, 400, "validation_failed")
    with http(api) as c:
        assert c.delete("/v1/cluster/default-pool").status_code == 204
    before = store(api)
    no_default = post_vm(api, {"name": "web-3", "image_url": IMAGE}, dry=True)
    assert_error(no_default, 400, "default_pool_not_set")
    viewer = post_vm(api, {"name": "web-4", "image_url": IMAGE}, dry=True, role="viewer")
    assert_error(viewer, 403, "permission_denied")
    explicit = post_vm(api, {"name": "web-5", "image_url": IMAGE, "pool": "default"}, dry=True)
    assert explicit.status_code == 200, explicit.text  # an explicit pool needs no default
    assert store(api) == before

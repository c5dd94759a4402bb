"""Storage pools through the real API (contract 1.4, 1.5, 3.1-3.3, 3.9, 3.11, 8.3).

Each bullet of contract 8.3 has a test below (in order, named after it); the
name and path rules of 3.1/3.2 run as parametrized tables; the validation
order of 1.4.4 is pinned case by case. Concurrency tests run on every backend.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from apihelpers import (
    DUPLICATE,
    IN_USE,
    POOLS,
    ROLES,
    assert_error,
    create_pool,
    delete_disk,
    get_pool,
    heartbeat,
    http,
    insert_disk,
    insert_vm,
    join_node,
    list_all,
    pool_body,
    pool_report,
    random_uuid,
    ready_node,
    serve,
)

from otherix.api.workers.liveness import liveness_pass
from otherix.store import ForeignKeyViolation, schema
from otherix.store.tx import sql
from support.clock import FakeClock

NAME_RULE = "(must match [A-Za-z0-9][A-Za-z0-9._-]*)"
BAD_TYPE = 'invalid storage pool type "{}" (must be one of: local_dir)'
ABSOLUTE = 'path must be absolute (start with "/")'
DOTDOT = "path must not contain a '..' segment"
TOO_LONG = "path is too long (max 1024 bytes)"
FLAT_KEYS = {
    "id",
    "node",
    "node_status",
    "name",
    "type",
    "path",
    "capacity_bytes",
    "available_bytes",
    "available_bytes_effective",
    "reported_at",
    "is_cluster_default",
    "config",
    "disk_pressure",
    "reconciliation_status",
    "last_reconciled_at",
    "reconciliation_error",
    "reconciliation_reason",
    "vm_disks",
    "cordoned",
    "usage",
    "scrub",
    "capacity_trend",
    "images",
    "conditions",
    "created_at",
    "updated_at",
}
GiB = 1 << 30

#: The tail of every pool not-found message.
LIST_POOLS = "; run 'otherix pool list' to see the pools"


def post(api, body: Any, role: str = "admin", **kwargs: Any):
    with http(api, role) as c:
        return c.post("/v1/storage-pools", json=body, **kwargs)


def patch(api, ref: str, body: Any, role: str = "admin"):
    with http(api, role) as c:
        return c.patch(f"/v1/storage-pools/{ref}", json=body)


def delete(api, ref: str, role: str = "admin"):
    with http(api, role) as c:
        return c.delete(f"/v1/storage-pools/{ref}")


def bad(r, message: str | None, field: str | None = None) -> dict[str, Any]:
    if field is None:
        return assert_error(r, 400, "validation_failed", message)
    return assert_error(r, 400, "validation_failed", message, {"field": field})


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def node(shared_api):
    """A joined node that never heartbeats (status pending, no default pool)."""
    return join_node(shared_api, "pool-node")


@pytest.fixture(scope="module")
def root_api(tmp_path_factory):
    """A server whose allowlist is "/", to reach the path syntax rules alone."""
    with serve(
        tmp_path_factory.mktemp("root-allowlist"),
        **{"storage_pools.allowed_path_prefixes": ["/"]},
    ) as api:
        yield api


# --- contract 8.3, bullet by bullet --------------------------------------------------------------


@pytest.mark.security
@pytest.mark.parametrize("role", ["operator", "developer", "viewer"])
def test_only_admin_can_create(shared_api, node, role):
    r = post(shared_api, pool_body(node, f"by-{role}"), role=role)
    assert_error(
        r,
        403,
        "permission_denied",
        f"role {role} lacks storage_pool:manage",
        {"required": "storage_pool:manage"},
    )


def test_happy_create_is_201_with_the_flat_view(shared_api, node):
    r = post(shared_api, pool_body(node, "Happy", "/var/lib/otherix/pools/happy"))
    assert r.status_code == 201
    pool = r.json()
    assert set(pool) == FLAT_KEYS
    uuid.UUID(pool["id"])
    assert pool["id"] == pool["id"].lower()
    expected: dict[str, object] = {
        "node": "pool-node",
        "node_status": "pending",
        "name": "Happy",
        "type": "local_dir",
        "path": "/var/lib/otherix/pools/happy",
        "capacity_bytes": None,
        "available_bytes": None,
        "available_bytes_effective": None,
        "reported_at": None,
        "is_cluster_default": False,
        "config": {},
        "disk_pressure": None,
        "reconciliation_status": "pending",
        "last_reconciled_at": None,
        "reconciliation_error": None,
        "images": [],
    }
    assert {k: pool[k] for k in expected} == expected
    assert pool["created_at"] == pool["updated_at"]
    assert utc(pool["created_at"]).tzinfo is not None
    assert pool["created_at"].endswith("Z")
    assert get_pool(shared_api, pool["id"]).json() == pool


@pytest.mark.parametrize(
    "field", ["available_bytes", "capacity_bytes", "is_default", "reported_at"]
)
def test_agent_reported_field_is_400(shared_api, node, field):
    r = post(shared_api, pool_body(node, f"with-{field}", **{field: 1}))
    assert_error(
        r,
        400,
        "validation_failed",
        "agent-reported fields are not accepted",
        {"forbidden_fields": [field]},
    )


def test_agent_reported_fields_are_listed_alphabetically(shared_api, node):
    body = pool_body(
        node, "all-forbidden", reported_at="x", is_default=True, capacity_bytes=1, available_bytes=1
    )
    r = post(shared_api, body)
    assert_error(
        r,
        400,
        "validation_failed",
        "agent-reported fields are not accepted",
        {"forbidden_fields": ["available_bytes", "capacity_bytes", "is_default", "reported_at"]},
    )


@pytest.mark.parametrize(
    ("change", "message", "field"),
    [
        ({"name": ""}, "name is required", "name"),
        ({"name": " leading"}, f'invalid pool name " leading" {NAME_RULE}', "name"),
        ({"type": "ceph_rbd"}, BAD_TYPE.format("ceph_rbd"), "type"),
        ({"path": None}, "path is required", "path"),
        ({"path": "relative/path"}, ABSOLUTE, "path"),
        ({"path": "~/pools"}, ABSOLUTE, "path"),
        ({"config": ["a"]}, "config must be a JSON object", "config"),
    ],
)
def test_invalid_create_bodies_are_400(shared_api, node, change, message, field):
    body = pool_body(node, "invalid-case")
    body.update(change)
    if change.get("path", "") is None:
        del body["path"]
    bad(post(shared_api, body), message, field)


def test_unknown_node_is_404(shared_api):
    r = post(shared_api, pool_body("no-such-node", "orphan"))
    message = "node \"no-such-node\" not found; run 'otherix node list' to see the nodes"
    assert_error(r, 404, "not_found", message, {"node": "no-such-node"})


def test_same_name_and_node_twice_is_409(shared_api, node):
    create_pool(shared_api, node, "twice")
    for name in ("twice", "TWICE"):
        r = post(shared_api, pool_body(node, name))
        assert_error(r, 409, "conflict", DUPLICATE, {"field": "name"})


@pytest.mark.parametrize("role", ROLES)
def test_every_role_can_get_by_id_and_list(shared_api, node, role):
    pool = create_pool(shared_api, node, f"readable-by-{role}")
    r = get_pool(shared_api, pool["id"], role)
    assert r.status_code == 200
    assert {
        "id",
        "node",
        "name",
        "type",
        "path",
        "is_cluster_default",
        "config",
        "created_at",
        "updated_at",
    } <= set(r.json())
    assert r.json() == pool | {"images": []}
    with http(shared_api, role) as c:
        listed = c.get("/v1/storage-pools", params={"limit": 200})
    assert listed.status_code == 200
    assert pool["id"] in [p["id"] for p in listed.json()["data"]]


def test_get_with_a_random_uuid_is_404(shared_api):
    ref = random_uuid()
    r = get_pool(shared_api, ref)
    assert_error(r, 404, "not_found", f'pool "{ref}" not found{LIST_POOLS}', None)


def test_list_filters_by_node_and_type(api):
    a, b = join_node(api, "filter-a"), join_node(api, "filter-b")
    on_a = {create_pool(api, a, f"fa-{i}")["id"] for i in range(3)}
    on_b = {create_pool(api, b, "fb-0")["id"]}
    for ref in ("filter-a", "FILTER-A", a.id, a.id.upper()):
        got = {p["id"] for p in list_all(api, {"node": ref, "type": "local_dir"})}
        assert got == on_a, ref
    assert {p["id"] for p in list_all(api, {"node": "filter-b"})} == on_b
    assert {p["id"] for p in list_all(api, {"type": "local_dir"})} == on_a | on_b
    with http(api, "viewer") as c:
        r = c.get("/v1/storage-pools", params={"type": "invalid"})
        bad(r, 'invalid storage pool type "invalid" (must be one of: local_dir)', "type")
        r = c.get("/v1/storage-pools", params={"type": "LOCAL_DIR"})
        bad(r, 'invalid storage pool type "LOCAL_DIR" (must be one of: local_dir)', "type")
        for unknown in ("ghost", random_uuid()):
            r = c.get("/v1/storage-pools", params={"node": unknown})
            message = f"node \"{unknown}\" not found; run 'otherix node list' to see the nodes"
            assert_error(r, 400, "validation_failed", message, {"node": unknown})


@pytest.mark.security
@pytest.mark.parametrize("role", ["operator", "developer", "viewer"])
def test_patch_by_non_admin_is_403(shared_api, node, role):
    pool = create_pool(shared_api, node, f"patch-by-{role}")
    r = patch(shared_api, pool["id"], {"config": {"x": 1}}, role=role)
    assert_error(r, 403, "permission_denied", details={"required": "storage_pool:manage"})
    assert get_pool(shared_api, pool["id"]).json()["config"] == {}


def test_patch_name_and_config(shared_api, node):
    pool = create_pool(shared_api, node, "before-rename", config={"old": True})
    r = patch(shared_api, pool["id"], {"name": "after-rename", "config": {"hint": "warm"}})
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "after-rename"
    assert body["config"] == {"hint": "warm"}
    assert body["id"] == pool["id"]
    assert body["path"] == pool["path"]
    assert body["images"] == []
    assert utc(body["updated_at"]) > utc(pool["updated_at"])
    assert body["created_at"] == pool["created_at"]
    gone = f'pool "before-rename" not found{LIST_POOLS}'
    assert_error(get_pool(shared_api, "before-rename"), 404, "not_found", gone)
    assert get_pool(shared_api, "after-rename").json()["instances"][0]["id"] == pool["id"]


@pytest.mark.parametrize(
    "field",
    [
        "node",
        "node_id",
        "type",
        "path",
        "is_default",
        "capacity_bytes",
        "available_bytes",
        "reported_at",
    ],
)
def test_patch_of_an_immutable_field_is_400(shared_api, node, field):
    pool = create_pool(shared_api, node, f"immutable-{field.replace('_', '-')}")
    r = patch(shared_api, pool["id"], {field: "x", "config": {"a": 1}})
    assert_error(
        r,
        400,
        "validation_failed",
        "one or more fields cannot be modified",
        {"forbidden_fields": [field]},
    )
    assert get_pool(shared_api, pool["id"]).json() == pool | {"images": []}


def test_default_pool_round_trip(api):
    node = join_node(api, "dp-node")
    with http(api) as c:
        assert c.delete("/v1/cluster/default-pool").status_code == 204
        r = c.get("/v1/cluster/default-pool")
        assert_error(r, 404, "default_pool_not_set", "cluster default pool is not set", None)
        r = c.put("/v1/cluster/default-pool", json={"name": "nope"})
        assert_error(
            r,
            400,
            "pool_not_found",
            f'pool "nope" not found{LIST_POOLS}',
            {"name": "nope"},
        )
        pool = create_pool(api, node, "Gold")
        r = c.put("/v1/cluster/default-pool", json={"name": "gold"})
        assert r.status_code == 200
        assert r.json() == {"name": "Gold"}
        assert c.get("/v1/cluster/default-pool").json() == {"name": "Gold"}
        assert get_pool(api, pool["id"]).json()["is_cluster_default"] is True
        assert c.delete("/v1/cluster/default-pool").status_code == 204
        assert c.get("/v1/cluster/default-pool").status_code == 404
        assert get_pool(api, pool["id"]).json()["is_cluster_default"] is False


@pytest.mark.security
@pytest.mark.parametrize("role", ["operator", "developer", "viewer"])
def test_delete_by_non_admin_is_403(shared_api, node, role):
    pool = create_pool(shared_api, node, f"delete-by-{role}")
    r = delete(shared_api, pool["id"], role=role)
    assert_error(r, 403, "permission_denied", details={"required": "storage_pool:manage"})
    assert get_pool(shared_api, pool["id"]).status_code == 200


def test_happy_delete_then_get_is_404(shared_api, node):
    pool = create_pool(shared_api, node, "doomed")
    r = delete(shared_api, pool["id"])
    assert r.status_code == 204
    assert r.content == b""
    for ref in (pool["id"], "doomed"):
        assert_error(
            get_pool(shared_api, ref), 404, "not_found", f'pool "{ref}" not found{LIST_POOLS}'
        )
    assert pool["id"] not in {p["id"] for p in list_all(shared_api)}


def test_delete_of_an_unknown_id_is_404(shared_api):
    for ref in (random_uuid(), "never-existed"):
        message = f'pool "{ref}" not found{LIST_POOLS}'
        assert_error(delete(shared_api, ref), 404, "not_found", message, None)


def test_delete_with_vm_disks_is_409_until_they_are_gone(shared_api, node):
    pool = create_pool(shared_api, node, "busy")
    vm = insert_vm(shared_api)
    disks = [insert_disk(shared_api, vm, pool["id"]) for _ in range(2)]
    for ref in (pool["id"], "busy"):
        r = delete(shared_api, ref)
        assert_error(r, 409, "conflict", IN_USE, {"blocking_resources": {"vm_disks": 2}})
    delete_disk(shared_api, disks[0])
    r = delete(shared_api, pool["id"])
    assert_error(r, 409, "conflict", IN_USE, {"blocking_resources": {"vm_disks": 1}})
    delete_disk(shared_api, disks[1])
    assert delete(shared_api, pool["id"]).status_code == 204


def test_idempotent_create_replays_and_a_mismatch_is_409(shared_api, node):
    body = pool_body(node, "idem-pool")
    key = {"Idempotency-Key": f"create-{uuid.uuid4()}"}
    first = post(shared_api, body, headers=key)
    again = post(shared_api, body, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    other = post(shared_api, pool_body(node, "idem-pool-2"), headers=key)
    assert_error(other, 409, "idempotency_key_mismatch")
    assert [p["id"] for p in list_all(shared_api) if p["name"].startswith("idem-pool")] == [
        first.json()["id"]
    ]


def test_scan_on_a_ready_node_is_202_with_a_task(api):
    node = ready_node(api, "scan-node")
    pool = create_pool(api, node, "scanned")
    with http(api, "operator") as c:
        r = c.post(f"/v1/storage-pools/{pool['id']}/scan")
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert accepted["status"] == "pending"
        assert accepted["links"] == {"self": f"/v1/tasks/{accepted['task_id']}"}
        task = c.get(accepted["links"]["self"]).json()
    assert task["type"] == "storage_pool.scan"
    assert task["resource_type"] == "storage_pool"
    assert task["resource_id"] == pool["id"]
    assert task["status"] == "pending"
    assert task["max_attempts"] == 25


def test_scan_of_an_unreachable_or_gone_node_is_409(api):
    node = ready_node(api, "fading")
    pool = create_pool(api, node, "fading-pool")
    clock = FakeClock(datetime.now(UTC))
    with http(api) as c:
        token = c.post("/v1/users/me/api-tokens", json={"name": "clock"}).json()["token"]
    api.server.set_clock(clock)
    for advance, status in ((91, "unreachable"), (301, "gone")):
        clock.advance(advance)
        liveness_pass(api.server.deps)
        with http(api, token=token) as c:
            assert c.get("/v1/nodes/fading").json()["status"] == status
            r = c.post(f"/v1/storage-pools/{pool['id']}/scan")
        assert_error(
            r, 409, "conflict", "node is not in a scannable state", {"current_status": status}
        )


def test_scan_errors(api):
    node = ready_node(api, "scan-errors")
    pool = create_pool(api, node, "scan-me")
    gone = create_pool(api, node, "deleted-before-scan")
    assert delete(api, gone["id"]).status_code == 204
    with http(api) as c:
        for ref in (random_uuid(), gone["id"], "no-such-pool"):
            r = c.post(f"/v1/storage-pools/{ref}/scan")
            assert_error(r, 404, "not_found", f'pool "{ref}" not found{LIST_POOLS}', None)
    for role in ("developer", "viewer"):
        with http(api, role) as c:
            r = c.post(f"/v1/storage-pools/{pool['id']}/scan")
        assert_error(r, 403, "permission_denied", details={"required": "storage_pool:scan"})
    key = {"Idempotency-Key": "scan-key"}
    with http(api) as c:
        first = c.post(f"/v1/storage-pools/{pool['id']}/scan", headers=key)
        again = c.post(f"/v1/storage-pools/{pool['id']}/scan", headers=key)
        other = c.post(f"/v1/storage-pools/{gone['id']}/scan", headers=key)
    assert first.status_code == again.status_code == 202
    assert again.content == first.content
    assert_error(other, 409, "idempotency_key_mismatch")


# --- names (docs/pool-contract.md §8.1) ---------------------------------------------------

ACCEPTED_NAMES = [
    "default",
    "ssd-fast",
    "pool-1",
    "pool_a",
    "my_pool",
    "pool.2",
    "Pool1",
    "a" * 255,
    "0",
    "9.-_x",
    "UPPER",
]
REJECTED_NAMES = [
    (" pool", f'invalid pool name " pool" {NAME_RULE}'),
    ("pool ", f'invalid pool name "pool " {NAME_RULE}'),
    ("my pool", f'invalid pool name "my pool" {NAME_RULE}'),
    (".hidden", f'invalid pool name ".hidden" {NAME_RULE}'),
    ("-dash", f'invalid pool name "-dash" {NAME_RULE}'),
    ("_under", f'invalid pool name "_under" {NAME_RULE}'),
    ("a/b", f'invalid pool name "a/b" {NAME_RULE}'),
    ("пул", f'invalid pool name "пул" {NAME_RULE}'),
    ("café", f'invalid pool name "café" {NAME_RULE}'),
    (".", f'invalid pool name "." {NAME_RULE}'),
    ("..", f'invalid pool name ".." {NAME_RULE}'),
    ("tab\there", f'invalid pool name "tab\\there" {NAME_RULE}'),
    # "nul\u0000": refused before the name rule (tests/api/test_api_strict_input.py)
    ("", "name is required"),
    ("a" * 256, "name is too long (max 255 runes)"),
    ("é" * 256, "name is too long (max 255 runes)"),
]


@pytest.mark.parametrize("name", ACCEPTED_NAMES, ids=lambda n: n[:20])
def test_accepted_names(shared_api, node, name):
    # one directory per pool on a node (issue 12): each name gets its own path
    r = post(shared_api, pool_body(node, name, POOLS + "named/" + name))
    assert r.status_code == 201, r.text
    assert r.json()["name"] == name
    assert get_pool(shared_api, name.swapcase()).json()["name"] == name


@pytest.mark.parametrize(("name", "message"), REJECTED_NAMES, ids=lambda v: repr(v)[:20])
def test_rejected_names(shared_api, node, name, message):
    bad(post(shared_api, pool_body(node, name, POOLS + "x")), message, "name")
    pool = create_pool(shared_api, node, f"rename-target-{uuid.uuid4().hex[:8]}")
    bad(patch(shared_api, pool["id"], {"name": name}), message, "name")


def test_names_are_unique_per_node_but_not_per_cluster(shared_api, node):
    other = join_node(shared_api, "pool-node-2")
    a = create_pool(shared_api, node, "Everywhere")
    b = create_pool(shared_api, other, "everywhere")
    assert a["id"] != b["id"]
    assert_error(post(shared_api, pool_body(other, "EVERYWHERE")), 409, "conflict", DUPLICATE)


# --- paths (contract 3.2) ------------------------------------------------------------------------

SYNTAX_ACCEPTED = [
    # "/" passes the syntax rules too, but with the allowlist "/" it is the prefix
    # itself, which issue 12 refuses (tests/api/test_api_pool_paths.py)
    "/var/lib/",
    "/" + "a" * 1023,
    "/" + "é" * 511 + "a",  # 1024 bytes, 513 characters
    "/var/lib/otherix/pools/a..b",
    "/var/lib/otherix/pools/...",
    "/srv/пулы/данные",
    "/srv/./x",
    "/srv//double//slashes",
    "/srv/trailing/",
    "/srv/trailing//",
]
CONTROL = "path must not contain control characters (newline, tab, escape ...)"
SYNTAX_REJECTED = [
    ("", "path is required"),
    ("var/lib", ABSOLUTE),
    ("./var/lib", ABSOLUTE),
    ("~/pools", ABSOLUTE),
    ("..", ABSOLUTE),
    ("/var/lib/../foo", DOTDOT),
    ("/var/lib/otherix/pools/..", DOTDOT),
    ("/var/lib/otherix/pools/../../../etc", DOTDOT),
    ("/var/lib/otherix/pools/data/..", DOTDOT),
    ("/..", DOTDOT),
    ("/" + "a" * 1024, TOO_LONG),
    ("/" + "é" * 512, TOO_LONG),  # 1025 bytes, 513 characters
    # "...\u0000...": refused before the path rule (tests/api/test_api_strict_input.py)
    ("/var/lib/otherix/pools/a\nb", CONTROL),
    ("/var/lib/otherix/pools/a\tb", CONTROL),
    ("/var/lib/otherix/pools/\x1b[2J", CONTROL),
]


@pytest.mark.parametrize("path", SYNTAX_ACCEPTED, ids=lambda p: p[:24])
def test_path_syntax_accepted_and_stored_as_typed(root_api, path):
    node = join_node(root_api)
    r = post(root_api, pool_body(node, "p", path))
    assert r.status_code == 201, r.text
    assert r.json()["path"] == path
    assert get_pool(root_api, r.json()["id"]).json()["path"] == path


@pytest.mark.security
@pytest.mark.parametrize(("path", "message"), SYNTAX_REJECTED, ids=lambda v: repr(v)[:24])
def test_path_syntax_rejected(shared_api, node, path, message):
    bad(post(shared_api, pool_body(node, "bad-path", path)), message, "path")


ALLOWLIST_ACCEPTED = [
    # the prefix itself ("/var/lib/otherix/pools", ".../pools/") is refused since
    # issue 12 (pools live below a prefix): tests/api/test_api_pool_paths.py
    "/var/lib/otherix/pools/data",
    "/var/lib/otherix/pools/data/",
    "/var/lib/otherix/pools//data",
    "/var/lib/otherix//pools/data",
    "/var/lib/otherix/pools/./data",
    "/var/lib/otherix/pools/deep/er/still",
]
ALLOWLIST_REJECTED = [
    "/etc/passwd",
    "/var/lib/otherix/pools-evil/x",
    "/var/lib/otherix/pools-evil",
    "/var/lib/otherix/poolsx",
    "/var/lib/otherix/pool",
    "/var/lib/otherix",
    "/var/lib/otherix/Pools/x",
    "/",
    "/tmp",
]


@pytest.mark.security
@pytest.mark.parametrize("path", ALLOWLIST_ACCEPTED)
def test_allowlist_accepts(shared_api, path):
    # a node of its own per case: these spellings name one directory, which one
    # node can give to one pool only (issue 12)
    name = f"allowed-{uuid.uuid4().hex[:8]}"
    r = post(shared_api, pool_body(join_node(shared_api), name, path))
    assert r.status_code == 201, r.text
    assert r.json()["path"] == path


@pytest.mark.security
@pytest.mark.parametrize("path", ALLOWLIST_REJECTED)
def test_allowlist_rejects(shared_api, node, path):
    r = post(shared_api, pool_body(node, "outside", path))
    prefixes = shared_api.server.settings.storage_pools.allowed_path_prefixes
    assert_error(
        r,
        400,
        "path_not_allowed",
        "path is not on the storage_pools allowlist",
        {"allowed_prefixes": list(prefixes), "path": path},
    )


# --- create: body shape and the validation order (contract 1.4.4) --------------------------------


NOT_A_STRING = "invalid request body: {}: Input should be a valid string"
NOT_AN_OBJECT = "config must be a JSON object"
BODY_ERRORS = [
    # (changes to a valid body; None deletes the key), message, field
    ({"node": None}, "node is required", "node"),
    ({"node": ""}, "node is required", "node"),
    ({"node": 5}, NOT_A_STRING.format("node"), "node"),
    ({"name": None}, "name is required", "name"),
    ({"name": 7}, NOT_A_STRING.format("name"), "name"),
    ({"path": 7}, NOT_A_STRING.format("path"), "path"),
    ({"type": "Local_Dir"}, BAD_TYPE.format("Local_Dir"), "type"),
    ({"type": ""}, BAD_TYPE.format(""), "type"),
    ({"config": "a"}, NOT_AN_OBJECT, "config"),
    ({"config": 5}, NOT_AN_OBJECT, "config"),
    ({"config": None}, NOT_AN_OBJECT, "config"),
]


@pytest.mark.parametrize(("change", "message", "field"), BODY_ERRORS, ids=range(len(BODY_ERRORS)))
def test_create_body_errors(shared_api, node, change, message, field):
    body = pool_body(node, "x")
    for key, value in change.items():
        if value is None and key != "config":
            del body[key]
        else:
            body[key] = value
    bad(post(shared_api, body), message, field)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[]", "invalid request body: expected a JSON object"),
        (b'"pool"', "invalid request body: expected a JSON object"),
        (b"", "invalid request body: empty"),
        (b"{", "invalid request body: malformed JSON"),
    ],
)
def test_create_body_must_be_a_json_object(shared_api, raw, message):
    with http(shared_api) as c:
        r = c.post("/v1/storage-pools", content=raw, headers={"content-type": "application/json"})
    assert_error(r, 400, "validation_failed", message, None)


def test_config_is_stored_as_given(shared_api, node):
    config = {"tier": "ssd", "nested": {"list": [1, 2], "null": None}, "n": 1.5}
    pool = create_pool(shared_api, node, "configured", config=config)
    assert pool["config"] == config
    assert get_pool(shared_api, pool["id"]).json()["config"] == config


def test_type_defaults_to_local_dir(shared_api, node):
    body = pool_body(node, "untyped")
    del body["type"]
    r = post(shared_api, body)
    assert r.status_code == 201
    assert r.json()["type"] == "local_dir"


ORDER = [
    # (body changes, expected code, expected message): the earliest failing step wins
    (
        {"name": "bad name", "path": "/etc/outside", "capacity_bytes": 1},
        "validation_failed",
        "agent-reported fields are not accepted",
    ),
    ({"node": "", "name": "bad name", "config": []}, "validation_failed", "node is required"),
    (
        {"name": "bad name", "path": "/etc/outside"},
        "validation_failed",
        f'invalid pool name "bad name" {NAME_RULE}',
    ),
    (
        {"name": "bad name", "config": []},
        "validation_failed",
        f'invalid pool name "bad name" {NAME_RULE}',
    ),
    (
        {"name": "bad name", "type": "nfs"},
        "validation_failed",
        f'invalid pool name "bad name" {NAME_RULE}',
    ),
    (
        {"type": "nfs", "path": "relative"},
        "validation_failed",
        'invalid storage pool type "nfs" (must be one of: local_dir)',
    ),
    ({"path": "relative", "config": []}, "validation_failed", ABSOLUTE),
    ({"path": "/etc/outside", "config": []}, "validation_failed", "config must be a JSON object"),
    (
        {"node": "ghost-node", "path": "/etc/outside"},
        "path_not_allowed",
        "path is not on the storage_pools allowlist",
    ),
    (
        {"node": "6f1d2a8e-1b7c-4a0e-9a53-0c1b2d3e4f50", "path": "/etc/outside"},
        "path_not_allowed",
        "path is not on the storage_pools allowlist",
    ),
    (
        {"node": "6f1d2a8e-1b7c-4a0e-9a53-0c1b2d3e4f50"},
        "validation_failed",
        "uuid format not accepted for name-only parameter 'node'",
    ),
    (
        {"node": "ghost-node"},
        "not_found",
        "node \"ghost-node\" not found; run 'otherix node list' to see the nodes",
    ),
]


@pytest.mark.parametrize(("change", "code", "message"), ORDER, ids=range(len(ORDER)))
def test_create_validation_order(shared_api, node, change, code, message):
    body = pool_body(node, "ordered")
    body.update(change)
    r = post(shared_api, body)
    status = {"validation_failed": 400, "path_not_allowed": 400, "not_found": 404}[code]
    assert_error(r, status, code, message)


def test_node_given_as_a_uuid_is_400(shared_api, node):
    r = post(shared_api, pool_body(node.id, "by-uuid"))
    assert_error(
        r,
        400,
        "validation_failed",
        "uuid format not accepted for name-only parameter 'node'",
        {
            "field": "node",
            "reason": "uuid_not_accepted_in_name_path",
            "hint": "Use 'otherix node list' to discover names.",
        },
    )


def test_node_name_is_case_insensitive(shared_api, node):
    pool = create_pool(shared_api, "POOL-NODE", "node-case")
    assert pool["node"] == "pool-node"


# --- listing: keyset pages -----------------------------------------------------------------------


def test_keyset_paging_has_no_duplicates_or_gaps(api):
    nodes = [join_node(api, "page-a"), join_node(api, "page-b")]
    created = [create_pool(api, nodes[i % 2], f"page-{i:02d}")["id"] for i in range(25)]
    seen: list[str] = []
    pages = []
    cursor = None
    with http(api, "viewer") as c:
        for _ in range(10):  # bounded: 4 pages expected
            params = {"limit": 7} | ({"cursor": cursor} if cursor else {})
            r = c.get("/v1/storage-pools", params=params)
            assert r.status_code == 200
            body = r.json()
            pages.append(len(body["data"]))
            seen += [p["id"] for p in body["data"]]
            cursor = body["meta"]["next_cursor"]
            if cursor is None:
                break
    assert pages == [7, 7, 7, 4]
    assert seen == created
    assert len(set(seen)) == 25


def test_a_pool_created_during_paging_appears_on_a_later_page(api):
    node = join_node(api, "page-live")
    first = [create_pool(api, node, f"live-{i}")["id"] for i in range(3)]
    with http(api, "viewer") as c:
        page1 = c.get("/v1/storage-pools", params={"limit": 2}).json()
        late = create_pool(api, node, "live-late")["id"]
        page2 = c.get(
            "/v1/storage-pools", params={"limit": 2, "cursor": page1["meta"]["next_cursor"]}
        ).json()
    assert [p["id"] for p in page1["data"]] == first[:2]
    assert [p["id"] for p in page2["data"]] == [first[2], late]


# --- get: concept view by name, flat view by UUID ------------------------------------------------


def test_get_by_name_is_the_concept_view_across_nodes(api):
    b, a = join_node(api, "zz-node-b"), join_node(api, "aa-node-a")
    on_b = create_pool(api, b, "SHARED")
    on_a = create_pool(api, a, "shared", POOLS + "shared-a")
    for ref in ("shared", "Shared", "SHARED"):
        r = get_pool(api, ref, "viewer")
        assert r.status_code == 200
        view = r.json()
        assert set(view) == {
            "name",
            "type",
            "is_cluster_default",
            "vm_disks",
            "capacity_bytes",
            "available_bytes",
            "usage",
            "instances",
        }
        assert view["name"] == "shared"  # canonical case of the first instance (by node name)
        assert view["type"] == "local_dir"
        assert view["is_cluster_default"] is False
        assert [i["id"] for i in view["instances"]] == [on_a["id"], on_b["id"]]
        assert [i["node"] for i in view["instances"]] == ["aa-node-a", "zz-node-b"]
        assert [i["name"] for i in view["instances"]] == ["shared", "SHARED"]
        for inst in view["instances"]:
            assert set(inst) == FLAT_KEYS


def test_get_by_uuid_is_the_flat_view(api):
    node = join_node(api, "flat-node")
    pool = create_pool(api, node, "flat")
    for ref in (pool["id"], pool["id"].upper()):
        r = get_pool(api, ref)
        assert r.status_code == 200
        assert set(r.json()) == FLAT_KEYS
        assert r.json()["id"] == pool["id"]


def test_get_by_a_name_that_looks_odd_is_404(shared_api):
    for ref in ("no-such", "NO-SUCH"):
        message = f'pool "{ref}" not found{LIST_POOLS}'
        assert_error(get_pool(shared_api, ref), 404, "not_found", message, None)
    # a long name is cut in the message
    message = f'pool "{"x" * 200}…" not found{LIST_POOLS}'
    assert_error(get_pool(shared_api, "x" * 300), 404, "not_found", message, None)


# --- patch ---------------------------------------------------------------------------------------


def test_rename_collision_is_409(shared_api, node):
    create_pool(shared_api, node, "Taken")
    pool = create_pool(shared_api, node, "free")
    for name in ("Taken", "taken"):
        assert_error(
            patch(shared_api, pool["id"], {"name": name}),
            409,
            "conflict",
            DUPLICATE,
            {"field": "name"},
        )
    r = patch(shared_api, pool["id"], {"name": "FREE"})  # its own name in another case
    assert r.status_code == 200
    assert r.json()["name"] == "FREE"


def test_rename_onto_a_name_used_on_another_node_is_fine(shared_api, node):
    other = join_node(shared_api, "pool-node-3")
    create_pool(shared_api, other, "elsewhere")
    pool = create_pool(shared_api, node, "here")
    assert patch(shared_api, pool["id"], {"name": "elsewhere"}).status_code == 200


def test_ambiguous_name_on_patch_and_delete_is_400(api):
    a, b = join_node(api, "amb-a"), join_node(api, "amb-b")
    pa, pb = create_pool(api, a, "Twin"), create_pool(api, b, "twin")
    details = {
        "name": "twin",
        "instances": [{"id": pa["id"], "node": "amb-a"}, {"id": pb["id"], "node": "amb-b"}],
    }
    message = "pool name 'twin' maps to 2 instances; use the instance UUID"
    for r in (patch(api, "twin", {"config": {}}), delete(api, "twin")):
        assert_error(r, 400, "pool_name_ambiguous", message, details)
    assert get_pool(api, "twin").status_code == 200  # a GET is never ambiguous
    assert patch(api, pa["id"], {"config": {"a": 1}}).status_code == 200
    assert delete(api, pb["id"]).status_code == 204
    assert patch(api, "twin", {"config": {"b": 2}}).json()["config"] == {"b": 2}  # now unique


def test_patch_errors(shared_api, node):
    pool = create_pool(shared_api, node, "patch-errors")
    ref = random_uuid()
    message = f'pool "{ref}" not found{LIST_POOLS}'
    assert_error(patch(shared_api, ref, {"config": {}}), 404, "not_found", message)
    assert_error(patch(shared_api, "nope-nope", {"config": {}}), 404, "not_found")
    # the key sweep runs before the lookup
    r = patch(shared_api, random_uuid(), {"type": "local_dir", "path": "/x"})
    assert_error(
        r,
        400,
        "validation_failed",
        "one or more fields cannot be modified",
        {"forbidden_fields": ["path", "type"]},
    )
    bad(patch(shared_api, pool["id"], {"config": []}), "config must be a JSON object", "config")
    bad(patch(shared_api, pool["id"], {"config": None}), "config must be a JSON object", "config")
    bad(
        patch(shared_api, pool["id"], {"name": "bad name", "config": []}),
        f'invalid pool name "bad name" {NAME_RULE}',
        "name",
    )
    bad(patch(shared_api, pool["id"], {"colour": "red"}), "unknown field 'colour'", "colour")
    # the whole body is checked before the lookup, as a create checks it before the node's
    bad(patch(shared_api, random_uuid(), {"config": []}), "config must be a JSON object", "config")
    bad(patch(shared_api, "nope-nope", {"colour": "red"}), "unknown field 'colour'", "colour")
    with http(shared_api) as c:
        r = c.patch(f"/v1/storage-pools/{pool['id']}", content=b"[1]")
    assert_error(r, 400, "validation_failed", "invalid request body: expected a JSON object")
    unchanged = patch(shared_api, pool["id"], {})
    assert unchanged.status_code == 200
    assert unchanged.json()["updated_at"] == pool["updated_at"]


def test_renaming_the_default_pool_drops_the_default(api):
    node = join_node(api, "rename-default")
    pool = create_pool(api, node, "main")
    with http(api) as c:
        assert c.put("/v1/cluster/default-pool", json={"name": "main"}).status_code == 200
    assert get_pool(api, pool["id"]).json()["is_cluster_default"] is True
    renamed = patch(api, pool["id"], {"name": "primary"}).json()
    assert renamed["is_cluster_default"] is False


# --- delete --------------------------------------------------------------------------------------


def test_delete_by_unique_name_and_by_uuid(shared_api, node):
    by_name = create_pool(shared_api, node, "Delete-By-Name")
    by_id = create_pool(shared_api, node, "delete-by-id")
    assert delete(shared_api, "delete-by-name").status_code == 204
    assert delete(shared_api, by_id["id"].upper()).status_code == 204
    remaining = {p["id"] for p in list_all(shared_api)}
    assert by_name["id"] not in remaining
    assert by_id["id"] not in remaining
    message = f'pool "{by_id["id"]}" not found{LIST_POOLS}'
    assert_error(delete(shared_api, by_id["id"]), 404, "not_found", message)


def test_a_deleted_pool_leaves_the_nodes_declared_state(api):
    node = ready_node(api, "declared")
    pool = create_pool(api, node, "declared-pool")
    names = [p["name"] for p in heartbeat(api, node).json()["desired"]["declared_pools"]]
    assert "declared-pool" in names
    assert delete(api, pool["id"]).status_code == 204
    names = [p["name"] for p in heartbeat(api, node).json()["desired"]["declared_pools"]]
    assert "declared-pool" not in names


def test_pools_of_a_deleted_node_go_with_it(api):
    # issue 13 item 9 departs from contract 3.7 (orphaned pools kept): the node's
    # pool instances are deleted with it and the answer lists them
    ready_node(api, "staying")  # holds another instance of the default pool
    node = ready_node(api, "leaving")
    pool = create_pool(api, node, "left-behind")
    with http(api) as c:
        r = c.delete("/v1/nodes/leaving")
    assert r.status_code == 200, r.text
    assert {p["name"] for p in r.json()["deleted_pools"]} == {"default", "left-behind"}
    assert_error(get_pool(api, pool["id"]), 404, "not_found")
    assert {p["node"] for p in list_all(api)} == {"staying"}


# --- cluster default pool (contract 1.5) ---------------------------------------------------------


def test_default_pool_put_matches_case_insensitively_and_stores_the_canonical_spelling(api):
    a, b = join_node(api, "canon-a"), join_node(api, "canon-b")
    first = create_pool(api, a, "FastPool")
    create_pool(api, b, "fastpool")
    with http(api) as c:
        r = c.put("/v1/cluster/default-pool", json={"name": "  FASTPOOL \t"})
        assert r.status_code == 200
        assert r.json() == {"name": "FastPool"}
        for role in ROLES:
            with http(api, role) as rc:
                assert rc.get("/v1/cluster/default-pool").json() == {"name": "FastPool"}
    flags = {p["id"]: p["is_cluster_default"] for p in list_all(api)}
    assert flags[first["id"]] is True
    assert sum(flags.values()) == 2
    view = get_pool(api, "fastpool").json()
    assert view["is_cluster_default"] is True
    assert all(i["is_cluster_default"] for i in view["instances"])


def test_default_pool_put_errors(api):
    node = join_node(api, "dp-errors")
    pool = create_pool(api, node, "real")
    with http(api) as c:
        r = c.put("/v1/cluster/default-pool", json={"name": pool["id"]})
        assert_error(r, 400, "pool_not_found", None, {"name": pool["id"]})
        for name in ("", "   "):
            r = c.put("/v1/cluster/default-pool", json={"name": name})
            assert_error(r, 400, "validation_failed", "name is required", {"field": "name"})
        for body in ({}, {"name": 5}, {"name": "x" * 256}, {"name": "real", "extra": 1}):
            assert_error(c.put("/v1/cluster/default-pool", json=body), 400, "validation_failed")
        assert c.get("/v1/cluster/default-pool").json() == {"name": "default"}  # unchanged


def test_default_pool_delete_is_idempotent(api):
    with http(api) as c:
        for _ in range(3):
            r = c.delete("/v1/cluster/default-pool")
            assert r.status_code == 204
            assert r.content == b""
        assert c.get("/v1/cluster/default-pool").status_code == 404


@pytest.mark.security
@pytest.mark.parametrize("role", ["operator", "developer", "viewer"])
def test_only_admin_changes_the_default_pool(shared_api, role):
    with http(shared_api, role) as c:
        put = c.put("/v1/cluster/default-pool", json={"name": "x"})
        rm = c.delete("/v1/cluster/default-pool")
        get = c.get("/v1/cluster/default-pool")
    for r in (put, rm):
        assert_error(r, 403, "permission_denied", details={"required": "cluster:manage"})
    assert get.status_code == 200


# --- auto-provisioning (contract 3.3) ------------------------------------------------------------


def test_first_heartbeat_provisions_the_default_pool(tmp_path):
    prefixes = {"storage_pools.allowed_path_prefixes": ["/var/lib/otherix/pools/", "/srv/"]}
    with serve(tmp_path, **prefixes) as api:
        node = join_node(api, "fresh")
        assert list_all(api) == []
        reply = heartbeat(api, node)
        assert reply.status_code == 200
        declared = reply.json()["desired"]["declared_pools"]
        assert declared[0]["identity"] == "create"  # pool identity: the agent writes the marker
        assert [{k: d[k] for k in ("name", "type", "path", "config")} for d in declared] == [
            {
                "name": "default",
                "type": "local_dir",
                "path": "/var/lib/otherix/pools/default",
                "config": {},
            }
        ]
        view = get_pool(api, "default").json()
        assert view["is_cluster_default"] is True
        (inst,) = view["instances"]
        assert inst["node"] == "fresh"
        assert inst["node_status"] == "ready"
        assert inst["path"] == "/var/lib/otherix/pools/default"
        assert inst["config"] == {}
        assert inst["type"] == "local_dir"
        assert inst["reconciliation_status"] == "pending"
        with http(api, "viewer") as c:
            assert c.get("/v1/cluster/default-pool").json() == {"name": "default"}
        # later heartbeats and a second node: one instance per node, no duplicates
        assert heartbeat(api, node, [pool_report("default")]).status_code == 200
        second = join_node(api, "fresh-2")
        heartbeat(api, second)
        pools = list_all(api)
        assert sorted(p["node"] for p in pools) == ["fresh", "fresh-2"]
        ready = get_pool(api, inst["id"]).json()
        assert ready["reconciliation_status"] == "ready"
        assert ready["last_reconciled_at"]


def test_no_default_pool_when_the_name_is_empty(tmp_path):
    with serve(tmp_path, **{"storage_pools.default_pool_name": ""}) as api:
        node = join_node(api, "opted-out")
        reply = heartbeat(api, node)
        assert reply.status_code == 200
        assert reply.json()["desired"]["declared_pools"] == []
        assert list_all(api) == []
        with http(api) as c:
            assert c.get("/v1/cluster/default-pool").status_code == 404


def _provisioning_name(api, monkeypatch, name: str) -> None:
    settings = api.server.deps.settings
    section = settings.storage_pools.model_copy(update={"default_pool_name": name})
    api.server.swap_settings(monkeypatch, settings.model_copy(update={"storage_pools": section}))


@pytest.mark.security
@pytest.mark.parametrize("name", ["a/b", "..", ".", "../etc", "bad name", "-x", "é"])
def test_an_unsafe_default_pool_name_provisions_nothing(shared_api, monkeypatch, name):
    _provisioning_name(shared_api, monkeypatch, name)
    node = join_node(shared_api)
    reply = heartbeat(shared_api, node)
    assert reply.status_code == 200
    assert reply.json()["desired"]["declared_pools"] == []
    assert list_all(shared_api, {"node": node.name}) == []


def test_the_default_pool_name_comes_from_config(shared_api, monkeypatch):
    _provisioning_name(shared_api, monkeypatch, "Main")
    node = join_node(shared_api)
    heartbeat(shared_api, node)
    (pool,) = list_all(shared_api, {"node": node.name})
    prefix = shared_api.server.settings.storage_pools.allowed_path_prefixes[0]
    assert (pool["name"], pool["path"]) == ("Main", prefix + "Main")


def test_an_existing_pool_of_that_name_is_kept(api):
    node = join_node(api, "preexisting")
    mine = create_pool(api, node, "Default", POOLS + "custom")
    heartbeat(api, node)
    pools = list_all(api)
    assert [(p["id"], p["path"]) for p in pools] == [(mine["id"], POOLS + "custom")]


# --- agent reports: status, disk pressure, effective capacity (contract 3.4, 3.9, 1.4.2) ---------


def test_reconciliation_status_follows_the_reports(api):
    node = ready_node(api, "recon")
    pool = create_pool(api, node, "recon-pool")
    heartbeat(api, node, [pool_report("RECON-POOL", "failed", error="mkdir: permission denied")])
    failed = get_pool(api, pool["id"]).json()
    assert failed["reconciliation_status"] == "failed"
    assert failed["reconciliation_error"] == "mkdir: permission denied"
    heartbeat(api, node, [pool_report("recon-pool")])
    ready = get_pool(api, pool["id"]).json()
    assert ready["reconciliation_status"] == "ready"
    assert ready["reconciliation_error"] is None
    assert utc(ready["last_reconciled_at"]) >= utc(failed["last_reconciled_at"])


def test_disk_pressure_is_set_below_15_percent_and_cleared_at_15(api):
    node = ready_node(api, "pressure")
    pool = create_pool(api, node, "p")
    reply = heartbeat(api, node, [pool_report("p", capacity=1000, available=100)])
    low = get_pool(api, pool["id"]).json()
    assert low["capacity_bytes"] == 1000
    assert low["available_bytes"] == 100
    assert low["available_bytes_effective"] == 100
    assert low["disk_pressure"] == {"since": low["reported_at"], "consecutive_count": 1}
    assert utc(low["reported_at"]) == utc(reply.json()["received_at"])

    heartbeat(api, node, [pool_report("p", capacity=1000, available=149)])
    still = get_pool(api, pool["id"]).json()
    assert still["disk_pressure"]["since"] == low["disk_pressure"]["since"]

    heartbeat(api, node, [pool_report("p", capacity=1000, available=150)])
    cleared = get_pool(api, pool["id"]).json()
    assert cleared["disk_pressure"] is None
    assert cleared["available_bytes"] == 150


def test_available_bytes_effective_subtracts_disks_created_after_the_report(api):
    node = ready_node(api, "effective")
    pool = create_pool(api, node, "eff")
    assert get_pool(api, pool["id"]).json()["available_bytes_effective"] is None
    heartbeat(api, node, [pool_report("eff", capacity=100 * GiB, available=50 * GiB)])
    reported = utc(get_pool(api, pool["id"]).json()["reported_at"])
    vm = insert_vm(api)
    insert_disk(api, vm, pool["id"], size_gib=5, created_at=reported - timedelta(seconds=1))
    insert_disk(api, vm, pool["id"], size_gib=10, created_at=reported + timedelta(seconds=1))
    view = get_pool(api, pool["id"]).json()
    assert view["available_bytes"] == 50 * GiB
    assert view["available_bytes_effective"] == 40 * GiB
    insert_disk(api, vm, pool["id"], size_gib=100, created_at=reported + timedelta(seconds=2))
    assert get_pool(api, pool["id"]).json()["available_bytes_effective"] == 0
    listed = next(p for p in list_all(api) if p["id"] == pool["id"])
    assert listed["available_bytes_effective"] == 0


# --- concurrency (both backends) -----------------------------------------------------------------


def test_50_concurrent_creates_of_one_name_make_exactly_one_pool(api_any_backend):
    api = api_any_backend
    node = join_node(api, "race-node")
    body = pool_body(node, "contested")
    barrier = threading.Barrier(50)

    def attempt(_: int):
        with http(api) as c:
            barrier.wait(timeout=30)
            return c.post("/v1/storage-pools", json=body)

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(attempt, range(50)))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [201] + [409] * 49
    for r in results:
        if r.status_code == 409:
            assert_error(r, 409, "conflict", DUPLICATE, {"field": "name"})
    assert [p["name"] for p in list_all(api)] == ["contested"]


def _disks_on(api, pool_id: str) -> int:
    with api.server.deps.db.read() as conn:
        stmt = (
            sa.select(sa.func.count())
            .select_from(schema.vm_disks)
            .where(schema.vm_disks.c.storage_pool_id == pool_id)
        )
        return int(sql(conn).execute(stmt).scalar_one())


def _orphan_disks(api) -> int:
    disks, pools = schema.vm_disks, schema.storage_pools
    with api.server.deps.db.read() as conn:
        stmt = (
            sa.select(sa.func.count())
            .select_from(disks.outerjoin(pools, pools.c.id == disks.c.storage_pool_id))
            .where(pools.c.id.is_(None))
        )
        return int(sql(conn).execute(stmt).scalar_one())


def test_pool_delete_racing_disk_inserts_never_orphans_a_disk(api_any_backend):
    """A thread keeps adding and removing a disk on the pool while the API is asked
    to delete it: every answer is either 409 (a disk was there) or 204, after which
    inserts are refused by the foreign key and no disk row points at the pool."""
    api = api_any_backend
    node = join_node(api, "delete-race")
    vm = insert_vm(api)
    for round_ in range(3):
        pool_id = create_pool(api, node, f"racy-{round_}")["id"]
        stop = threading.Event()
        refused: list[ForeignKeyViolation] = []

        def churn(pool_id: str = pool_id, stop: threading.Event = stop, refused=refused) -> int:
            cycles = 0
            while not stop.is_set():
                try:
                    disk = insert_disk(api, vm, pool_id)
                except ForeignKeyViolation as exc:
                    refused.append(exc)
                    break
                delete_disk(api, disk)
                cycles += 1
            return cycles

        answers = []
        with ThreadPoolExecutor(max_workers=1) as ex:
            churner = ex.submit(churn)
            try:
                for _ in range(500):  # bounded: about half the attempts find no disk
                    answers.append(delete(api, pool_id))
                    if answers[-1].status_code == 204:
                        break
            finally:
                stop.set()
            churner.result()
        assert answers[-1].status_code == 204, [a.text for a in answers[-3:]]
        for r in answers[:-1]:
            err = assert_error(r, 409, "conflict", IN_USE)
            assert err["details"]["blocking_resources"]["vm_disks"] >= 1
        assert _disks_on(api, pool_id) == 0
        assert get_pool(api, pool_id).status_code == 404
        with pytest.raises(ForeignKeyViolation):
            insert_disk(api, vm, pool_id)
    assert _orphan_disks(api) == 0

"""No dangling references (issue 13 item 9), through the real API on every backend.

- The last instance of the cluster default pool cannot be deleted
  (``409 conflict``, reason ``default_pool_in_use``, with the two ways on);
  one of several can. Of N concurrent deletes of the N instances, N-1 win.
- ``DELETE /v1/nodes/{name}`` is refused while the node's pools hold VM disks
  (``blocking_resources``, the VM names, a hint); otherwise the node's pool
  instances go with it and the 200 answer lists them.
- A deleted node's credential answers ``401`` reason ``node_deleted`` on every
  agent route, including a watch that was parked when the node was deleted.
- A pool left on a deleted node from before (it held disks) shows no stale
  ``ready`` and no free space: ``failed``, no capacity, condition ``orphaned``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest
from apihelpers import (
    Api,
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
    pool_report,
    ready_node,
    serve,
)

from otherix.store.nodes import store as qn
from support.harness import wait_until

TWO_WAYS = (
    'storage pool "default" is the cluster default and this is its last instance; set another '
    "default first ('otherix cluster set-default-pool NAME') or unset it "
    "('otherix cluster unset-default-pool'), then delete it"
)


@pytest.fixture
def xapi(tmp_path, db_url) -> Iterator[Api]:
    with serve(tmp_path / "api", db_url) as api:
        yield api


def delete_pool(api, ref: str):
    with http(api) as c:
        return c.delete(f"/v1/storage-pools/{ref}")


def delete_node(api, name: str):
    with http(api) as c:
        return c.delete(f"/v1/nodes/{name}")


# --- the cluster default pool ----------------------------------------------------------


def test_the_last_instance_of_the_default_pool_cannot_be_deleted(xapi):
    ready_node(xapi, "a")
    ready_node(xapi, "b")
    first, second = (p["id"] for p in list_all(xapi) if p["name"] == "default")
    assert delete_pool(xapi, first).status_code == 204  # one of several: fine
    r = delete_pool(xapi, second)
    assert_error(r, 409, "conflict", TWO_WAYS, {"reason": "default_pool_in_use", "name": "default"})
    assert [p["id"] for p in list_all(xapi)] == [second]
    with http(xapi) as c:
        assert c.get("/v1/cluster/default-pool").json() == {"name": "default"}
        # way on 1: another default
        create_pool(xapi, "a", "fast")
        assert c.put("/v1/cluster/default-pool", json={"name": "fast"}).status_code == 200
    assert delete_pool(xapi, second).status_code == 204
    # way on 2: unset it
    fast = next(p["id"] for p in list_all(xapi) if p["name"] == "fast")
    assert_error(delete_pool(xapi, "fast"), 409, "conflict")
    with http(xapi) as c:
        assert c.delete("/v1/cluster/default-pool").status_code == 204
    assert delete_pool(xapi, fast).status_code == 204


def test_concurrent_deletes_of_every_instance_leave_one(xapi):
    nodes = [ready_node(xapi, f"n{i}") for i in range(6)]
    ids = [p["id"] for p in list_all(xapi) if p["name"] == "default"]
    assert len(ids) == len(nodes)
    barrier = threading.Barrier(len(ids))

    def remove(pool_id: str) -> httpx.Response:
        with http(xapi) as c:
            barrier.wait()
            return c.delete(f"/v1/storage-pools/{pool_id}")

    with ThreadPoolExecutor(len(ids)) as pool:
        answers = list(pool.map(remove, ids))
    assert sorted(r.status_code for r in answers) == [204] * 5 + [409]
    refused = next(r for r in answers if r.status_code == 409)
    assert refused.json()["error"]["details"]["reason"] == "default_pool_in_use"
    assert len([p for p in list_all(xapi) if p["name"] == "default"]) == 1


# --- node delete ------------------------------------------------------------------------


def test_node_delete_is_refused_while_its_pools_hold_vm_disks(xapi):
    ready_node(xapi, "keeper")
    node = ready_node(xapi, "busy")
    pool = create_pool(xapi, node, "data")
    vm = insert_vm(xapi, name="web-1")
    disk = insert_disk(xapi, vm, pool["id"])
    r = delete_node(xapi, "busy")
    err = assert_error(r, 409, "conflict")
    assert err["details"] == {
        "blocking_resources": {"vm_disks": 1},
        "vms": ["web-1"],
        "hint": "otherix vm list --node busy",
    }
    assert "1 VM disk(s) (web-1)" in err["message"]
    assert "otherix vm list --node busy" in err["message"]
    with http(xapi) as c:
        assert c.get("/v1/nodes/busy").json()["status"] == "ready"
    assert get_pool(xapi, pool["id"]).status_code == 200
    assert heartbeat(xapi, node).status_code == 200  # its credential still works

    delete_disk(xapi, disk)
    r = delete_node(xapi, "busy")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "busy"
    assert body["id"] == node.id
    deleted = {p["name"]: p for p in body["deleted_pools"]}
    assert sorted(deleted) == ["data", "default"]
    assert deleted["data"] == {"id": pool["id"], "name": "data", "path": pool["path"]}
    assert {p["node"] for p in list_all(xapi)} == {"keeper"}
    assert_error(get_pool(xapi, pool["id"]), 404, "not_found")


def test_node_delete_is_refused_when_it_holds_the_last_default_instance(xapi):
    ready_node(xapi, "only")
    r = delete_node(xapi, "only")
    err = assert_error(r, 409, "conflict")
    assert err["details"] == {"reason": "default_pool_in_use", "name": "default"}
    assert err["message"] == "node only holds the last instance of the cluster default pool: " + (
        TWO_WAYS
    )
    with http(xapi) as c:
        assert c.delete("/v1/cluster/default-pool").status_code == 204
    r = delete_node(xapi, "only")
    assert r.status_code == 200
    assert [p["name"] for p in r.json()["deleted_pools"]] == ["default"]
    assert list_all(xapi) == []


def test_a_node_without_pools_is_deleted_with_an_empty_list(xapi):
    join_node(xapi, "bare")  # never heartbeated: no default pool
    r = delete_node(xapi, "bare")
    assert r.status_code == 200
    assert r.json()["deleted_pools"] == []
    assert_error(delete_node(xapi, "bare"), 404, "not_found")


# --- the deleted node's credential ---------------------------------------------------------


def test_a_deleted_nodes_credential_says_the_node_was_removed(xapi):
    ready_node(xapi, "keeper")
    node = ready_node(xapi, "removed")
    parked: dict[str, httpx.Response] = {}
    revision = heartbeat(xapi, node).json()["desired"]["revision"]

    def watch() -> None:
        with http(xapi, token=node.credential) as c:
            parked["r"] = c.get(
                f"/v1/nodes/{node.name}/watch", params={"revision": revision, "timeout": 20}
            )

    waiter = threading.Thread(target=watch)
    waiter.start()
    wait_until(lambda: xapi.server.deps.hub.waiting() >= 1, 10, "the watch to park")
    assert delete_node(xapi, "removed").status_code == 200
    waiter.join(timeout=15)
    expected = {"reason": "node_deleted", "node": "removed"}
    err = assert_error(parked["r"], 401, "unauthenticated", details=expected)
    assert "node removed was removed from the cluster" in err["message"]
    assert "otherix node join-token create" in err["message"]
    assert "otherix-agent bootstrap --force" in err["message"]
    assert_error(heartbeat(xapi, node), 401, "unauthenticated", details=expected)
    with http(xapi, token=node.credential) as c:
        r = c.get(f"/v1/nodes/{node.name}/watch", params={"revision": 0, "timeout": 0})
    assert_error(r, 401, "unauthenticated", details=expected)
    # a new node of the same name is another node, with another credential
    again = ready_node(xapi, "removed")
    assert heartbeat(xapi, again).status_code == 200
    assert_error(heartbeat(xapi, node), 401, "unauthenticated", details=expected)


# --- pools orphaned before the fix --------------------------------------------------------


def test_a_pool_orphaned_before_the_fix_shows_no_stale_capacity(xapi):
    node = ready_node(xapi, "old")
    pool = create_pool(xapi, node, "legacy")
    heartbeat(xapi, node, [pool_report("legacy", capacity=1000, available=900)])
    assert get_pool(xapi, pool["id"]).json()["available_bytes"] == 900
    insert_disk(xapi, insert_vm(xapi, name="held"), pool["id"])
    with xapi.server.deps.db.write() as conn:  # as an older server deleted nodes
        qn.soft_delete(conn, node.id, datetime.now(UTC))
    view = get_pool(xapi, pool["id"]).json()
    assert (view["node"], view["node_status"]) == ("", None)
    assert view["reconciliation_status"] == "failed"
    assert view["capacity_bytes"] is None
    assert view["available_bytes"] is None
    assert view["available_bytes_effective"] is None
    assert [c["type"] for c in view["conditions"]] == ["orphaned"]
    assert "node of this pool was deleted" in view["reconciliation_error"]
    listed = next(p for p in list_all(xapi) if p["id"] == pool["id"])
    assert listed["conditions"] == view["conditions"]

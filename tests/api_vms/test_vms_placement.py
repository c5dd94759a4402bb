"""Placement (contract 3.8): reasons one by one, retries, room, tie-break, binding.

One server for the module (``shared_api``): every test names its own nodes,
pools and VMs with a unique prefix (``px``) and never uses the ``default``
pool, so other tests' nodes never take part in its placements.
"""

from __future__ import annotations

import time

import pytest
from test_vms_helpers import (
    GIB,
    IMAGE,
    SHA,
    add_pool,
    create_vm,
    desired_tasks,
    get,
    get_vm,
    heartbeat,
    join_node,
    node_with_pool,
    place,
    ready_node,
    report,
)

from otherix.store.nodes import store as qn


@pytest.fixture
def api(shared_api):
    return shared_api


def _status(api, name):
    return get_vm(api, name)["status"]


def _pool(api, name, node):
    body = get(api, f"/v1/storage-pools/{name}").json()
    return next(i for i in body["instances"] if i["node"] == node)


def test_pool_not_found(api, px):
    node_with_pool(api, f"{px}-a", f"{px}-fast")
    create_vm(api, f"{px}-1", pool=f"{px}-slow")
    place(api)
    status = _status(api, f"{px}-1")
    assert (status["phase"], status["reason"]) == ("pending", "pool_not_found")
    assert status["message"] == f'pool "{px}-slow" not found in cluster'
    assert status["details"] == {"pool": f"{px}-slow"}
    assert get_vm(api, f"{px}-1")["node"] is None


def test_pool_not_on_node_with_a_node_hint(api, px):
    node_with_pool(api, f"{px}-a", f"{px}-fast")
    ready_node(api, f"{px}-b")
    create_vm(api, f"{px}-1", pool=f"{px}-fast", node=f"{px}-b")
    status = _status(api, f"{px}-1")
    assert status["reason"] == "pool_not_on_node"
    assert status["message"] == f'pool "{px}-fast" not present on node "{px}-b"'
    # the hint is a name, compared case-insensitively
    vm = create_vm(api, f"{px}-2", pool=f"{px}-fast", node=f"{px}-A")
    assert vm["node"] == f"{px}-a"


def test_a_hint_on_a_node_whose_instance_is_not_eligible(api, px):
    node_with_pool(api, f"{px}-a", f"{px}-fast")
    node_with_pool(api, f"{px}-b", f"{px}-fast")
    with api.client("admin") as c:
        assert c.post(f"/v1/nodes/{px}-b/cordon").status_code == 200
    create_vm(api, f"{px}-1", pool=f"{px}-fast", node=f"{px}-b")
    status = _status(api, f"{px}-1")
    assert status["reason"] == "pool_not_on_node"
    assert status["details"]["excluded"] == "node_cordoned"
    vm = create_vm(api, f"{px}-2", pool=f"{px}-fast", node=f"{px}-a")
    assert vm["node"] == f"{px}-a"


def test_no_eligible_nodes_when_the_only_node_is_cordoned(api, px):
    node_with_pool(api, f"{px}-a", f"{px}-fast")
    with api.client("admin") as c:
        assert c.post(f"/v1/nodes/{px}-a/cordon").status_code == 200
    create_vm(api, f"{px}-1", pool=f"{px}-fast")
    status = _status(api, f"{px}-1")
    assert (status["reason"], status["message"]) == (
        "no_eligible_nodes",
        "no eligible node available",
    )
    [candidate] = status["details"]["candidates"]
    assert (candidate["node"], candidate["excluded"]) == (f"{px}-a", "node_cordoned")
    with api.client("admin") as c:
        assert c.post(f"/v1/nodes/{px}-a/uncordon").status_code == 200
    place(api)
    vm = get_vm(api, f"{px}-1")
    assert vm["node"] == f"{px}-a"
    assert vm["status"]["reason"] is None


def test_no_eligible_nodes_when_the_only_node_is_unreachable(api, px):
    a = node_with_pool(api, f"{px}-a", f"{px}-fast")
    with api.server.deps.db.write() as conn:
        qn.update_node(conn, a.id, {"status": "unreachable"})
    create_vm(api, f"{px}-1", pool=f"{px}-fast")
    status = _status(api, f"{px}-1")
    assert status["reason"] == "no_eligible_nodes"
    assert status["details"]["candidates"][0]["excluded"] == "node_unreachable"
    heartbeat(api, a)  # back: promoted to ready
    place(api)
    assert get_vm(api, f"{px}-1")["node"] == f"{px}-a"


def test_node_pressure_then_cleared(api, px):
    pool = f"{px}-fast"
    a = node_with_pool(api, f"{px}-a", pool, capacity=100 * GIB, available=10 * GIB)  # 10 %
    create_vm(api, f"{px}-1", pool=pool)
    status = _status(api, f"{px}-1")
    assert (status["reason"], status["message"]) == (
        "node_pressure",
        "all candidate nodes under pressure",
    )
    [item] = status["details"]["filtered_due_to_pressure"]
    assert (item["node"], item["pool"], item["conditions"]) == (
        f"{px}-a",
        pool,
        ["disk_pressure"],
    )
    assert item["disk_pressure_since"]
    heartbeat(api, a, report(pool, available=50 * GIB))
    place(api)
    assert get_vm(api, f"{px}-1")["node"] == f"{px}-a"


def test_a_pressured_pool_only_excludes_itself(api, px):
    pool = f"{px}-fast"
    node_with_pool(api, f"{px}-a", pool, capacity=100 * GIB, available=5 * GIB)
    node_with_pool(api, f"{px}-b", pool, capacity=100 * GIB, available=20 * GIB)
    assert create_vm(api, f"{px}-1", pool=pool)["node"] == f"{px}-b"


def test_room_is_judged_by_effective_available_bytes(api, px):
    pool = f"{px}-fast"
    a = node_with_pool(api, f"{px}-a", pool, capacity=20 * GIB, available=10 * GIB)
    assert create_vm(api, f"{px}-1", pool=pool, disk_gib=6)["node"] == f"{px}-a"
    # 10 GiB reported minus the 6 GiB disk created after the report: 4 GiB left
    assert _pool(api, pool, f"{px}-a")["available_bytes_effective"] == 4 * GIB
    create_vm(api, f"{px}-2", pool=pool, disk_gib=6)
    status = _status(api, f"{px}-2")
    assert (status["reason"], status["message"]) == (
        "insufficient_resources",
        "no node has sufficient resources",
    )
    assert status["details"]["required_disk_bytes"] == 6 * GIB
    assert status["details"]["candidates"][0]["available_bytes_effective"] == 4 * GIB
    # disk_gib 0 (the image's size) is not judged against room
    assert create_vm(api, f"{px}-3", pool=pool, disk_gib=0)["node"] == f"{px}-a"
    assert create_vm(api, f"{px}-4", pool=pool, disk_gib=4)["node"] == f"{px}-a"  # just fits
    heartbeat(api, a, report(pool, capacity=20 * GIB, available=7 * GIB))  # a new report
    place(api)
    assert get_vm(api, f"{px}-2")["node"] == f"{px}-a"


def test_a_pending_vm_is_placed_once_its_pool_becomes_ready(api, px):
    pool = f"{px}-fast"
    a = ready_node(api, f"{px}-a")
    add_pool(api, a, pool, state="pending")
    create_vm(api, f"{px}-1", pool=pool)
    status = _status(api, f"{px}-1")
    assert status["reason"] == "no_eligible_nodes"
    assert status["details"]["candidates"][0]["excluded"] == "pool_pending"
    heartbeat(api, a, report(pool))
    place(api)
    vm = get_vm(api, f"{px}-1")
    assert (vm["node"], vm["pool"], vm["status"]["phase"]) == (f"{px}-a", pool, "pending")
    assert [t["type"] for t in desired_tasks(api, a)] == ["vm.create"]


def test_a_failed_pool_is_not_eligible(api, px):
    a = ready_node(api, f"{px}-a")
    add_pool(api, a, f"{px}-fast", state="failed")
    create_vm(api, f"{px}-1", pool=f"{px}-fast")
    excluded = _status(api, f"{px}-1")["details"]["candidates"][0]["excluded"]
    assert excluded == "pool_failed"


def test_the_scheduler_worker_retries_by_itself_when_pools_change(api, px):
    a = ready_node(api, f"{px}-a")
    create_vm(api, f"{px}-1", pool=f"{px}-fast")
    add_pool(api, a, f"{px}-fast")  # create + ready report: both wake the scheduler
    deadline = time.monotonic() + 10
    while get_vm(api, f"{px}-1")["node"] is None:
        assert time.monotonic() < deadline, "the scheduler did not retry"
        time.sleep(0.05)


def test_tie_break_most_effective_free_bytes_then_node_name(api, px):
    pool = f"{px}-fast"
    node_with_pool(api, f"{px}-Node-B", pool, capacity=100 * GIB, available=60 * GIB)
    node_with_pool(api, f"{px}-node-a", pool, capacity=100 * GIB, available=60 * GIB)
    node_with_pool(api, f"{px}-node-c", pool, capacity=100 * GIB, available=40 * GIB)

    def node_of(n, disk_gib):
        return create_vm(api, f"{px}-{n}", pool=pool, disk_gib=disk_gib)["node"]

    assert node_of(1, 0) == f"{px}-node-a"  # tie: lower-case name
    assert node_of(2, 10) == f"{px}-node-a"
    assert node_of(3, 10) == f"{px}-Node-B"  # 60 > 50
    assert node_of(4, 1) == f"{px}-node-a"  # 50 == 50, a < b


def test_an_instance_that_never_reported_capacity_ranks_last(api, px):
    pool = f"{px}-fast"
    a = join_node(api, f"{px}-a")
    heartbeat(api, a)
    add_pool(api, a, pool, state="pending")
    heartbeat(api, a, {"name": pool, "reconciliation_status": "ready"})
    node_with_pool(api, f"{px}-z", pool, capacity=2 * GIB, available=1 * GIB)
    assert create_vm(api, f"{px}-1", pool=pool)["node"] == f"{px}-z"
    assert create_vm(api, f"{px}-2", pool=pool, disk_gib=5)["node"] == f"{px}-a"  # kept


def test_the_vm_architecture_must_match_the_node(api, px):
    node_with_pool(api, f"{px}-a", f"{px}-fast")
    create_vm(api, f"{px}-1", pool=f"{px}-fast", arch="arm64")
    status = _status(api, f"{px}-1")
    assert status["reason"] == "no_eligible_nodes"
    assert status["details"]["candidates"][0]["excluded"] == "architecture_mismatch"
    node_with_pool(api, f"{px}-arm", f"{px}-fast", arch="arm64")
    place(api)
    assert get_vm(api, f"{px}-1")["node"] == f"{px}-arm"


def test_pool_by_instance_uuid(api, px):
    node_with_pool(api, f"{px}-a", f"{px}-fast")
    node_with_pool(api, f"{px}-b", f"{px}-fast")
    target = _pool(api, f"{px}-fast", f"{px}-b")
    vm = create_vm(api, f"{px}-1", pool=target["id"].upper())
    assert (vm["node"], vm["pool"], vm["pool_id"]) == (f"{px}-b", f"{px}-fast", target["id"])


def test_binding_writes_the_root_disk_and_a_vm_create_task_in_the_desired_state(api, px):
    pool_name = f"{px}-fast"
    a = node_with_pool(api, f"{px}-a", pool_name)
    pool = _pool(api, pool_name, f"{px}-a")
    vm = create_vm(
        api,
        f"{px}-1",
        pool=pool_name,
        disk_gib=7,
        format="raw",
        image_sha256=SHA,
        pull_policy="always",
    )
    assert (vm["node"], vm["pool_id"], vm["status"]["phase"]) == (f"{px}-a", pool["id"], "pending")
    [disk] = get_vm(api, f"{px}-1")["disks"]
    assert disk["storage_pool_id"] == pool["id"]
    assert (disk["device_order"], disk["size_gib"], disk["format"]) == (0, 7, "raw")
    assert (disk["bus"], disk["source_kind"], disk["file_path"]) == ("virtio", "image", None)
    [task] = desired_tasks(api, a)
    assert task["type"] == "vm.create"
    assert task["args"] == {
        "vm_id": vm["id"],
        "pool_path": pool["path"],
        "pool_name": pool_name,
        "image_url": IMAGE,
        "image_sha256": SHA,
        "pull_policy": "always",
        "format": "raw",
        "disk_gib": 7,
        # what the agent needs to start the VM once the disk is made
        "name": f"{px}-1",
        "vcpus": vm["vcpus"],
        "memory_mb": vm["memory_mb"],
        "restart_policy": "on-failure",
        "start": True,
    }
    assert vm["status"]["task_id"] == task["id"]
    # the owner sees the task (task:read own): pending, for this VM, on this node
    body = get(api, f"/v1/tasks/{task['id']}", role="developer").json()
    assert (body["type"], body["status"], body["resource_type"], body["resource_id"]) == (
        "vm.create",
        "pending",
        "vm",
        vm["id"],
    )
    place(api)
    assert len(desired_tasks(api, a)) == 1  # placed once

"""``POST /v1/vms/{name}/move`` (issue 16, deliverable 5): admission and its refusals,
the ``vm.move`` task and the target's ``incoming`` disk, the one atomic switch on success,
the follow-up ``vm.disk_remove`` tasks, and what a moving VM refuses (start, delete, the
pools' delete). The agent is played by posting its heartbeats and task reports; one
server for the module (``shared_api``), names prefixed per test (``px``)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Any

import pytest
from test_vms_helpers import (
    DIGEST,
    GIB,
    add_pool,
    agent_report,
    create_result,
    create_vm,
    desired_tasks,
    error_of,
    get,
    get_vm,
    heartbeat,
    node_with_pool,
    ready_node,
    report,
)

from support.factories import Node, heartbeat_body


@pytest.fixture
def api(shared_api):
    return shared_api


def _stopped_vm(
    api: Any, px: str, node: Node | None = None, **room: Any
) -> tuple[Node, dict[str, Any], dict[str, Any]]:
    """A VM with its disk made on pool ``{px}-a`` (stopped, never ran), and the pool
    ``{px}-b`` on the same node: (node, vm, pool b)."""
    if node is None:
        node = node_with_pool(api, f"{px}-n", f"{px}-a")
    b = add_pool(api, node, f"{px}-b", **room)
    vm = create_vm(api, f"{px}-vm", pool=f"{px}-a", power_state="stopped")
    [create] = [t for t in desired_tasks(api, node) if t["args"]["vm_id"] == vm["id"]]
    result = create_result(vm, create["args"]["pool_path"])
    assert agent_report(api, node, create["id"], "success", result=result).status_code == 200
    return node, get_vm(api, vm["name"]), b


def _move(api: Any, name: str, role: str = "admin", **body: Any) -> Any:
    with api.client(role) as c:
        return c.post(f"/v1/vms/{name}/move", json=body)


def _declared(api: Any, node: Node) -> dict[str, list[dict[str, Any]]]:
    """pool name -> its declared disks, as the node's agent reads them."""
    with api.client(None) as c:
        r = c.get(
            f"/v1/nodes/{node.name}/watch",
            params={"revision": 0, "timeout": 0},
            headers=node.auth,
        )
    return {p["name"]: p["disks"] for p in r.json()["desired"]["declared_pools"]}


def _refused(r: Any, reason: str) -> dict[str, Any]:
    error = error_of(r, 409, "vm_not_movable")
    assert error["details"]["reason"] == reason, error
    return error


def test_a_move_is_a_task_the_target_declares_incoming_and_success_switches_once(api, px) -> None:
    node, vm, b = _stopped_vm(api, px)
    src_path = vm["disks"][0]["file_path"]
    r = _move(api, vm["name"], pool=f"{px}-b")
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    [task] = [t for t in desired_tasks(api, node) if t["id"] == task_id]
    assert task["type"] == "vm.move"
    assert task["args"]["source"]["pool_name"] == f"{px}-a"
    assert task["args"]["target"] == {"pool_name": f"{px}-b", "pool_path": b["path"]}
    seen = get_vm(api, vm["name"])
    assert (seen["status"]["phase"], seen["pool"]) == ("moving", f"{px}-a")
    declared = _declared(api, node)
    [incoming] = declared[f"{px}-b"]
    assert incoming["incoming"] is True
    assert incoming["file_path"] == f"{b['path']}/vms/{vm['id']}/disk.qcow2"
    assert [d["incoming"] for d in declared[f"{px}-a"]] == [False]
    # the same move again answers the same task; another target is refused
    assert _move(api, vm["name"], pool=f"{px}-b").json()["task_id"] == task_id
    other = add_pool(api, node, f"{px}-c")
    _refused(_move(api, vm["name"], pool=other["name"]), "vm_moving")
    # a moving VM is neither started nor deleted, and neither pool may go
    with api.client("admin") as c:
        error_of(c.post(f"/v1/vms/{vm['name']}/start"), 409, "vm_not_startable")
        error = error_of(c.delete(f"/v1/vms/{vm['name']}"), 409, "conflict")
        assert error["details"]["reason"] == "vm_moving"
        for pool in (vm["pool_id"], b["id"]):
            assert c.delete(f"/v1/storage-pools/{pool}").status_code == 409
    progress = {"bytes_done": 5, "bytes_total": 10, "phase": "copy"}
    assert (
        agent_report(api, node, task_id, "running", progress=40, result=progress).status_code == 200
    )
    target_path = f"{b['path']}/vms/{vm['id']}/disk.qcow2"
    done = {
        "vm_id": vm["id"],
        "file_path": target_path,
        "method": "copy",
        "sha256": "ab" * 32,
        "bytes": 3 * GIB,
        "virtual_size_bytes": 10 * GIB,
        "disk_size_bytes": 2 * GIB,
    }
    assert agent_report(api, node, task_id, "success", result=done).status_code == 200
    seen = get_vm(api, vm["name"])
    assert (seen["status"]["phase"], seen["pool"], seen["pool_id"]) == (
        "stopped",
        f"{px}-b",
        b["id"],
    )
    assert seen["disks"][0]["file_path"] == target_path
    assert seen["disks"][0]["actual_size_bytes"] == 2 * GIB
    # the source goes by its own task, which keeps the target's copy
    [remove] = [t for t in desired_tasks(api, node) if t["type"] == "vm.disk_remove"
                and t["args"]["vm_id"] == vm["id"]]  # fmt: skip
    assert remove["args"]["pool_name"] == f"{px}-a"
    assert remove["args"]["keep"] == {"pool_name": f"{px}-b", "pool_path": b["path"]}
    assert seen["status"]["task_id"] == remove["id"]
    declared = _declared(api, node)
    assert declared[f"{px}-a"] == []
    assert [(d["incoming"], d["file_path"]) for d in declared[f"{px}-b"]] == [(False, target_path)]
    assert src_path != target_path
    with api.client("admin") as c:  # the old pool is free, the new one holds the disk
        assert c.delete(f"/v1/storage-pools/{b['id']}").status_code == 409
        assert c.delete(f"/v1/storage-pools/{other['id']}").status_code == 204
    # a second report of the same task changes nothing
    agent_report(api, node, task_id, "success", result=done)
    assert get_vm(api, vm["name"])["pool"] == f"{px}-b"


@pytest.mark.parametrize("outcome", ["failed", "cancelled"])
def test_a_failed_or_cancelled_move_leaves_the_disk_where_it_was(api, px, outcome) -> None:
    node, vm, b = _stopped_vm(api, px)
    task_id = _move(api, vm["name"], pool=f"{px}-b").json()["task_id"]
    if outcome == "failed":
        error = {"code": "checksum_mismatch", "message": "the copy hashes to something else"}
        assert agent_report(api, node, task_id, "failed", error=error).status_code == 200
    else:
        with api.client("operator") as c:
            assert c.post(f"/v1/tasks/{task_id}/cancel").status_code == 200
    seen = get_vm(api, vm["name"])
    assert (seen["status"]["phase"], seen["pool"]) == ("stopped", f"{px}-a")
    assert seen["status"]["reason"] == "move_failed"
    code = "checksum_mismatch" if outcome == "failed" else "cancelled"
    assert seen["status"]["details"]["code"] == code
    assert seen["disks"][0]["file_path"] == vm["disks"][0]["file_path"]
    # whatever reached the target is removed, keeping the source's copy
    [remove] = [t for t in desired_tasks(api, node) if t["type"] == "vm.disk_remove"
                and t["args"]["vm_id"] == vm["id"]]  # fmt: skip
    assert (remove["args"]["pool_name"], remove["args"]["keep"]["pool_name"]) == (
        f"{px}-b",
        f"{px}-a",
    )
    assert _declared(api, node)[f"{px}-b"] == []
    with api.client("admin") as c:
        assert c.delete(f"/v1/storage-pools/{b['id']}").status_code == 204
    # and it may be moved again once the removal is done
    assert (
        agent_report(api, node, remove["id"], "success", result={"removed": True}).status_code
        == 200
    )
    add_pool(api, node, f"{px}-c")
    assert _move(api, vm["name"], pool=f"{px}-c").status_code == 202


def test_what_a_move_refuses_before_anything_is_copied(api, px) -> None:
    node, vm, b = _stopped_vm(api, px)
    name = vm["name"]
    error_of(_move(api, name, pool="no-such-pool"), 404, "not_found")
    _refused(_move(api, name, pool=f"{px}-a"), "same_pool")
    # a pool with no instance on the VM's node: a 400 naming where it is, never a move
    far = ready_node(api, f"{px}-far")
    add_pool(api, far, f"{px}-far-p")
    error = error_of(_move(api, name, pool=f"{px}-far-p"), 400, "validation_failed")
    assert error["details"]["nodes"] == [f"{px}-far"]
    assert "--node" in error["message"]
    # across nodes, both agents must have a transfer endpoint (these played ones have none)
    error = _refused(_move(api, name, pool=f"{px}-far-p", node=f"{px}-far"), "transfer_unavailable")
    assert "transfer.listen" in error["message"]
    # a cordoned target
    with api.client("admin") as c:
        assert c.post(f"/v1/storage-pools/{b['id']}/cordon").status_code == 200
    error_of(_move(api, name, pool=f"{px}-b"), 409, "pool_cordoned")
    # a failed target
    add_pool(api, node, f"{px}-bad", state="failed")
    _refused(_move(api, name, pool=f"{px}-bad"), "pool_failed")
    # no room: the disk takes 3 GiB (create_result), the target has 1
    add_pool(api, node, f"{px}-tiny", available=1 * GIB)
    error = _refused(_move(api, name, pool=f"{px}-tiny"), "insufficient_space")
    assert error["details"]["needed_bytes"] == 3 * GIB
    # a running VM
    running = [{"id": vm["id"], "state": "running", "pid": 42}]
    body = heartbeat_body([], digest=DIGEST)
    body["vms"] = running
    with api.client(None) as c:
        assert (
            c.post(f"/v1/nodes/{node.name}/heartbeat", json=body, headers=node.auth).status_code
            == 200
        )
    add_pool(api, node, f"{px}-ok")
    error_of(_move(api, name, pool=f"{px}-ok"), 409, "vm_running")
    # nothing of it moved, and no task was made
    assert get_vm(api, name)["status"]["phase"] == "stopped"
    assert not [t for t in desired_tasks(api, node) if t["type"] == "vm.move"]
    # who may: admins and operators, not developers (even the owner) or viewers
    for role in ("developer", "viewer"):
        assert _move(api, name, role=role, pool=f"{px}-ok").status_code == 403
    error_of(_move(api, f"{px}-nobody", pool=f"{px}-ok"), 404, "not_found")
    error_of(_move(api, name), 400, "validation_failed")  # no pool


def test_a_vm_whose_disk_is_not_made_is_not_movable(api, px) -> None:
    node = node_with_pool(api, f"{px}-n", f"{px}-a")
    add_pool(api, node, f"{px}-b")
    vm = create_vm(api, f"{px}-vm", pool=f"{px}-a")  # its vm.create never reported
    assert get_vm(api, vm["name"])["status"]["phase"] == "pending"
    _refused(_move(api, vm["name"], pool=f"{px}-b"), "vm_not_stopped")
    heartbeat(api, node, report(f"{px}-b"))
    assert get(api, f"/v1/vms/{vm['name']}").json()["pool"] == f"{px}-a"


def _with_transfer(api: Any, node: Node, url: str) -> None:
    """A heartbeat saying the node's agent has a disk transfer endpoint at ``url``."""
    body = heartbeat_body([], digest=DIGEST, capabilities={"transfer_url": url})
    with api.client(None) as c:
        r = c.post(f"/v1/nodes/{node.name}/heartbeat", json=body, headers=node.auth)
        assert r.status_code == 200, r.text


def test_a_move_across_nodes_opens_a_ticket_on_the_source_and_switches_the_node(api, px) -> None:
    node, vm, _ = _stopped_vm(api, px)
    far = ready_node(api, f"{px}-far")
    dest = add_pool(api, far, f"{px}-dest")
    _with_transfer(api, node, "http://10.0.0.1:7444")
    _with_transfer(api, far, "http://10.0.0.2:7444")
    r = _move(api, vm["name"], pool=f"{px}-dest", node=far.name)
    assert r.status_code == 202, r.text
    move_id = r.json()["task_id"]
    # the target pulls; the source exports, knowing only the secret's sha256
    [move] = [t for t in desired_tasks(api, far) if t["id"] == move_id]
    transfer = move["args"]["transfer"]
    assert transfer["url"] == "http://10.0.0.1:7444"
    secret = transfer["secret"]
    [export] = [t for t in desired_tasks(api, node) if t["type"] == "vm.export"]
    assert export["args"]["ticket"] == transfer["ticket"]
    assert export["args"]["token_sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert "secret" not in json.dumps(export["args"])
    # the secret is never stored: not in any task view, not on the source
    for task_id in (move_id, export["id"]):
        assert secret not in get(api, f"/v1/tasks/{task_id}").text
    assert secret not in json.dumps(desired_tasks(api, node))
    [incoming] = _declared(api, far)[f"{px}-dest"]
    assert incoming["incoming"] is True
    # another node can neither report on the move nor see the secret
    with api.client(None) as c:
        r = c.post(
            f"/v1/nodes/{node.name}/tasks/{move_id}", json={"status": "success"}, headers=node.auth
        )
    assert r.status_code in (403, 404), r.text
    target_path = f"{dest['path']}/vms/{vm['id']}/disk.qcow2"
    done = {"vm_id": vm["id"], "file_path": target_path, "method": "transfer", "bytes": 1}
    assert agent_report(api, far, move_id, "success", result=done).status_code == 200
    seen = get_vm(api, vm["name"])
    assert (seen["node"], seen["pool"], seen["status"]["phase"]) == (
        far.name,
        f"{px}-dest",
        "stopped",
    )
    # the ticket is revoked (its task ended), the source's copy goes by its own task
    source_tasks = desired_tasks(api, node)
    assert not [t for t in source_tasks if t["type"] == "vm.export"]
    assert get(api, f"/v1/tasks/{export['id']}").json()["status"] == "success"
    [remove] = [t for t in source_tasks if t["type"] == "vm.disk_remove"]
    assert (remove["args"]["pool_name"], remove["args"]["keep"]) == (f"{px}-a", None)
    assert _declared(api, node)[f"{px}-a"] == []


def test_a_failed_move_across_nodes_revokes_the_ticket_and_cleans_the_target(api, px) -> None:
    node, vm, _ = _stopped_vm(api, px)
    far = ready_node(api, f"{px}-far")
    add_pool(api, far, f"{px}-dest")
    _with_transfer(api, node, "http://10.0.0.1:7444")
    _with_transfer(api, far, "http://10.0.0.2:7444")
    move_id = _move(api, vm["name"], pool=f"{px}-dest", node=far.name).json()["task_id"]
    error = {"code": "transfer_failed", "message": "the source node went away"}
    assert agent_report(api, far, move_id, "failed", error=error).status_code == 200
    seen = get_vm(api, vm["name"])
    assert (seen["node"], seen["pool"], seen["status"]["reason"]) == (
        node.name,
        f"{px}-a",
        "move_failed",
    )
    assert not [t for t in desired_tasks(api, node) if t["type"] == "vm.export"]
    [remove] = [t for t in desired_tasks(api, far) if t["type"] == "vm.disk_remove"]
    assert (remove["args"]["pool_name"], remove["args"]["keep"]) == (f"{px}-dest", None)


@pytest.mark.parametrize("outcome", ["success", "failed", "cancelled"])
def test_the_end_of_a_move_across_nodes_wakes_the_source_nodes_watch(api, px, outcome) -> None:
    # The target reports; the source must hear at once that its ticket is revoked (and,
    # after a success, that its copy goes), not only when its parked watch times out.
    node, vm, _ = _stopped_vm(api, px)
    far = ready_node(api, f"{px}-far")
    dest = add_pool(api, far, f"{px}-dest")
    _with_transfer(api, node, "http://10.0.0.1:7444")
    _with_transfer(api, far, "http://10.0.0.2:7444")
    move_id = _move(api, vm["name"], pool=f"{px}-dest", node=far.name).json()["task_id"]
    with api.client(None) as c:
        parked = c.get(
            f"/v1/nodes/{node.name}/watch",
            params={"revision": 0, "timeout": 0},
            headers=node.auth,
        ).json()["desired"]
    assert [t["type"] for t in parked["tasks"]] == ["vm.export"]
    answers: list[dict[str, Any]] = []

    def watch() -> None:
        with api.client(None) as c:
            r = c.get(
                f"/v1/nodes/{node.name}/watch",
                params={"revision": parked["revision"], "timeout": 60},
                headers=node.auth,
                timeout=90,
            )
        answers.append(r.json())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(0.3)  # parked
    if outcome == "success":
        path = f"{dest['path']}/vms/{vm['id']}/disk.qcow2"
        done = {"vm_id": vm["id"], "file_path": path, "method": "transfer", "bytes": 1}
        assert agent_report(api, far, move_id, "success", result=done).status_code == 200
    elif outcome == "failed":
        error = {"code": "transfer_failed", "message": "the source node went away"}
        assert agent_report(api, far, move_id, "failed", error=error).status_code == 200
    else:
        with api.client("admin") as c:
            assert c.post(f"/v1/tasks/{move_id}/cancel").status_code == 200
    watcher.join(timeout=20)  # a third of the watch's own timeout
    assert answers, "the source's watch was not woken when the move ended"
    [answer] = answers
    assert answer["changed"] is True
    types = [t["type"] for t in answer["desired"]["tasks"]]
    assert "vm.export" not in types
    assert types == (["vm.disk_remove"] if outcome == "success" else [])

"""The agent's side of a VM: vm.create progress and outcome, cancel, and delete.

One server for the module (``shared_api``); every test names its node, pool and
VMs with a unique prefix (``px``).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from test_vms_helpers import (
    GIB,
    SHA,
    agent_report,
    create_result,
    create_vm,
    desired_tasks,
    error_of,
    get,
    get_vm,
    node_with_pool,
    place,
    vm_body,
)

from otherix.store.nodes import store as qn


@pytest.fixture
def api(shared_api):
    return shared_api


def _bound(api, px, **fields):
    node = node_with_pool(api, f"{px}-a", f"{px}-p")
    vm = create_vm(api, f"{px}-1", pool=f"{px}-p", **fields)
    assert vm["node"] == f"{px}-a"
    [task] = desired_tasks(api, node)
    return node, vm, task


def test_progress_then_success_gives_stopped_with_the_disk_recorded(api, px):
    node, vm, task = _bound(api, px, disk_gib=10)
    progress = {"bytes_done": 5 * GIB, "bytes_total": 10 * GIB}
    r = agent_report(api, node, task["id"], "running", progress=50, result=progress)
    assert r.status_code == 200, r.text
    assert get_vm(api, f"{px}-1")["status"]["phase"] == "creating"
    body = get(api, f"/v1/tasks/{task['id']}", role="developer").json()
    assert (body["status"], body["progress"], body["result"]) == ("running", 50, progress)

    result = create_result(vm, task["args"]["pool_path"])
    assert agent_report(api, node, task["id"], "success", result=result).status_code == 200
    admin_view = get_vm(api, f"{px}-1")
    assert admin_view["status"] == {
        "phase": "stopped",
        "reason": None,
        "message": None,
        "details": None,
        "task_id": task["id"],
        "state": "stopped",  # the disk is ready and QEMU never ran
        "runtime": None,
    }
    [disk] = admin_view["disks"]
    assert disk["file_path"] == result["file_path"]
    assert (disk["virtual_size_bytes"], disk["actual_size_bytes"]) == (10 * GIB, 3 * GIB)
    assert disk["image_sha256"] == SHA
    # the path is host layout: admins and operators only
    assert get_vm(api, f"{px}-1", role="operator")["disks"][0]["file_path"] == result["file_path"]
    assert get_vm(api, f"{px}-1", role="developer")["disks"][0]["file_path"] is None
    assert get_vm(api, f"{px}-1", role="viewer")["disks"][0]["file_path"] is None
    task_view = get(api, f"/v1/tasks/{task['id']}").json()
    assert (task_view["status"], task_view["progress"], task_view["result"]) == (
        "success",
        100,
        result,
    )
    assert desired_tasks(api, node) == []  # done: dropped from the desired state


def test_failure_gives_error_with_the_task_code_as_reason(api, px):
    node, _vm, task = _bound(api, px)
    assert agent_report(api, node, task["id"], "running", progress=10).status_code == 200
    error = {"code": "checksum_mismatch", "message": "checksum_mismatch: url x served sha y"}
    assert agent_report(api, node, task["id"], "failed", error=error).status_code == 200
    status = get_vm(api, f"{px}-1")["status"]
    assert (status["phase"], status["reason"], status["message"]) == (
        "error",
        "checksum_mismatch",
        error["message"],
    )
    assert get(api, f"/v1/tasks/{task['id']}").json()["error"] == error
    # a failed VM still holds its disk row until it is deleted
    assert len(get_vm(api, f"{px}-1")["disks"]) == 1


def test_a_late_report_after_the_outcome_changes_nothing(api, px):
    node, vm, task = _bound(api, px)
    error = {"code": "pool_full", "message": "no room"}
    assert agent_report(api, node, task["id"], "failed", error=error).status_code == 200
    result = create_result(vm, task["args"]["pool_path"])
    assert agent_report(api, node, task["id"], "success", result=result).status_code == 200
    assert get_vm(api, f"{px}-1")["status"]["reason"] == "pool_full"


def test_vm_create_can_be_cancelled_only_while_pending(api, px):
    node, _vm, task = _bound(api, px)
    with api.client("developer") as c:
        r = c.post(f"/v1/tasks/{task['id']}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    status = get_vm(api, f"{px}-1")["status"]
    assert (status["phase"], status["reason"]) == ("error", "cancelled")
    assert desired_tasks(api, node) == []

    other = create_vm(api, f"{px}-2", pool=f"{px}-p")
    [task2] = desired_tasks(api, node)
    assert task2["args"]["vm_id"] == other["id"]
    assert agent_report(api, node, task2["id"], "running", progress=1).status_code == 200
    with api.client("admin") as c:
        err = error_of(c.post(f"/v1/tasks/{task2['id']}/cancel"), 409, "conflict")
    assert err["details"]["current_status"] == "running"
    assert get_vm(api, f"{px}-2")["status"]["phase"] == "creating"


def test_deleting_a_pending_vm_is_immediate(api, px):
    create_vm(api, f"{px}-1", pool="nowhere")
    with api.client("developer") as c:
        r = c.delete(f"/v1/vms/{px}-1")
        assert r.status_code == 204, r.text
        assert r.content == b""
        error_of(c.get(f"/v1/vms/{px}-1"), 404, "not_found")
        error_of(c.delete(f"/v1/vms/{px}-1"), 404, "not_found")
    place(api)
    assert get(api, f"/v1/vms/{px}-1").status_code == 404


def test_deleting_a_placed_vm_runs_vm_delete_then_unblocks_the_pool(api, px):
    node, vm, create = _bound(api, px, disk_gib=1)
    result = create_result(vm, create["args"]["pool_path"])
    assert agent_report(api, node, create["id"], "success", result=result).status_code == 200
    pool_id = vm["pool_id"]
    with api.client("admin") as c:
        err = error_of(c.delete(f"/v1/storage-pools/{pool_id}"), 409, "conflict")
    assert err["details"] == {"blocking_resources": {"vm_disks": 1}}

    with api.client("developer") as c:
        r = c.delete(f"/v1/vms/{px}-1")
        assert r.status_code == 202, r.text
        accepted = r.json()
        # asking again while it runs answers with the same task
        assert c.delete(f"/v1/vms/{px}-1").json()["task_id"] == accepted["task_id"]
    assert accepted["status"] == "pending"
    assert accepted["links"] == {"self": f"/v1/tasks/{accepted['task_id']}"}
    status = get_vm(api, f"{px}-1")["status"]
    assert (status["phase"], status["task_id"]) == ("deleting", accepted["task_id"])
    [task] = desired_tasks(api, node)
    assert (task["id"], task["type"]) == (accepted["task_id"], "vm.delete")
    assert task["args"] == {
        "vm_id": vm["id"],
        "pool_name": f"{px}-p",
        "pool_path": create["args"]["pool_path"],
        "file_path": result["file_path"],
        "format": "qcow2",
        "force": False,
    }
    with api.client("admin") as c:  # still blocked while the disk exists
        error_of(c.delete(f"/v1/storage-pools/{pool_id}"), 409, "conflict")

    assert agent_report(api, node, task["id"], "success", result={}).status_code == 200
    assert get(api, f"/v1/vms/{px}-1").status_code == 404
    assert get(api, "/v1/vms", pool=pool_id).json()["data"] == []
    with api.client("admin") as c:
        assert c.delete(f"/v1/storage-pools/{pool_id}").status_code == 204


def test_deleting_a_vm_whose_create_is_pending_cancels_the_create(api, px):
    node, _vm, create = _bound(api, px)
    with api.client("developer") as c:
        assert c.delete(f"/v1/vms/{px}-1").status_code == 202
    assert [t["type"] for t in desired_tasks(api, node)] == ["vm.delete"]
    body = get(api, f"/v1/tasks/{create['id']}").json()
    assert body["status"] == "cancelled"
    assert get_vm(api, f"{px}-1")["status"]["phase"] == "deleting"


def test_a_failed_delete_leaves_the_vm_in_error_and_can_be_retried(api, px):
    node, _vm, create = _bound(api, px)
    error = {"code": "vm_delete_failed", "message": "EBUSY"}
    assert agent_report(api, node, create["id"], "failed", error={"code": "x"}).status_code == 200
    with api.client("developer") as c:
        first = c.delete(f"/v1/vms/{px}-1").json()["task_id"]
    assert agent_report(api, node, first, "failed", error=error).status_code == 200
    status = get_vm(api, f"{px}-1")["status"]
    assert (status["phase"], status["reason"], status["message"]) == (
        "error",
        "vm_delete_failed",
        "EBUSY",
    )
    with api.client("developer") as c:
        second = c.delete(f"/v1/vms/{px}-1").json()["task_id"]
    assert second != first
    assert agent_report(api, node, second, "success").status_code == 200
    assert get(api, f"/v1/vms/{px}-1").status_code == 404


def test_a_vm_on_a_deleted_node_is_removed_at_once(api, px):
    node, _vm, create = _bound(api, px)
    with api.client("admin") as c:
        # since issue 13 a node whose pools hold disks cannot be deleted...
        r = c.delete(f"/v1/nodes/{px}-a")
        assert r.status_code == 409, r.text
        assert r.json()["error"]["details"]["blocking_resources"] == {"vm_disks": 1}
    # ...so this is a node an older server deleted with its VM still on it
    with api.server.deps.db.write() as conn:
        qn.soft_delete(conn, node.id, datetime.now(UTC))
    with api.client("admin") as c:
        assert c.delete(f"/v1/vms/{px}-1").status_code == 204
        assert c.get(f"/v1/vms/{px}-1").status_code == 404
        # its create task will never run: it is cancelled, not left pending
        assert c.get(f"/v1/tasks/{create['id']}").json()["status"] == "cancelled"


def test_the_client_covers_the_vm_calls(api, px):
    from otherix.client.api import ApiClient
    from otherix.client.errors import ApiError

    node = node_with_pool(api, f"{px}-a", f"{px}-p")
    with ApiClient(api.url, api.tokens["developer"]) as client:
        created = client.create_vm(vm_body(f"{px}-1", pool=f"{px}-p"), idempotency_key=f"k-{px}")
        assert (
            client.create_vm(vm_body(f"{px}-1", pool=f"{px}-p"), idempotency_key=f"k-{px}").id
            == created.id
        )
        assert client.get_vm(f"{px}-1").node == f"{px}-a"
        assert [vm.name for vm in client.list_vms(pool=f"{px}-p").data] == [f"{px}-1"]
        accepted = client.delete_vm(f"{px}-1")
        assert accepted is not None
        assert accepted.task_id == desired_tasks(api, node)[0]["id"]
        client.create_vm(vm_body(f"{px}-2", pool="nowhere"))
        assert client.delete_vm(f"{px}-2") is None
        with pytest.raises(ApiError) as info:
            client.get_vm(f"{px}-2")
        assert (info.value.status, info.value.code) == (404, "not_found")

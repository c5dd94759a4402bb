"""Same redaction everywhere (issue 13.6): a task shows a role exactly what the
VM's own view shows it, on a live server with a node enrolled the real way.

A developer creates two VMs; the node's agent reports one ``vm.create``
success (with the disk's host ``file_path``) and one failure whose message and
details quote host paths. Every view a developer can reach (the VM, the task,
the task list) is searched for the host path: ``lost`` counts where it shows.
Admins (and operators) see it everywhere, the same in the VM and the task.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from securityhelpers import heartbeat_body, join_node

pytestmark = pytest.mark.security


def _setup(api) -> tuple[Any, str, str]:
    node = join_node(api.url, api.tokens["admin"], "red-node")
    pool_path = f"{api.server.settings.data_dir}/pools/redpool"
    with api.client("admin") as admin:
        r = admin.post(
            "/v1/storage-pools", json={"node": node.name, "name": "redpool", "path": pool_path}
        )
        assert r.status_code == 201, r.text
    report = {
        "name": "redpool",
        "reconciliation_status": "ready",
        "capacity_bytes": 1 << 40,
        "available_bytes": 1 << 39,
    }
    r = httpx.post(
        f"{api.url}/v1/nodes/{node.name}/heartbeat",
        json=heartbeat_body([report]),
        headers=node.auth,
    )
    assert r.status_code == 200, r.text
    return node, pool_path, "redpool"


def _vm(api, name: str, pool: str) -> dict[str, Any]:
    body = {
        "name": name,
        "image_url": "http://images.example.test/x.qcow2",
        "pool": pool,
        "arch": "amd64",
        "vcpus": 1,
        "memory_mb": 256,
    }
    with api.client("developer") as dev:
        r = dev.post("/v1/vms", json=body)
    assert r.status_code == 201, r.text
    vm = r.json()
    assert vm["status"]["task_id"], vm  # placed: a vm.create task for the node
    return vm


def _report(api, node, task_id: str, update: dict[str, Any]) -> None:
    r = httpx.post(
        f"{api.url}/v1/nodes/{node.name}/tasks/{task_id}", json=update, headers=node.auth
    )
    assert r.status_code == 200, r.text


def _views(api, role: str, ok: dict[str, Any], bad: dict[str, Any]) -> dict[str, Any]:
    with api.client(role) as c:
        return {
            "vm": c.get(f"/v1/vms/{ok['name']}").json(),
            "failed vm": c.get(f"/v1/vms/{bad['name']}").json(),
            "vm list": c.get("/v1/vms").json()["data"],
            "task": c.get(f"/v1/tasks/{ok['status']['task_id']}").json(),
            "failed task": c.get(f"/v1/tasks/{bad['status']['task_id']}").json(),
            "task list": c.get("/v1/tasks", params={"resource_type": "vm"}).json()["data"],
        }


def test_tasks_hide_host_paths_exactly_as_the_vm_view_does(api, reliability):
    node, pool_path, pool = _setup(api)
    ok, bad = _vm(api, "red-ok", pool), _vm(api, "red-bad", pool)
    file_path = f"{pool_path}/vms/{ok['id']}/disk.qcow2"
    bad_path = f"{pool_path}/vms/{bad['id']}/disk.qcow2"
    result = {
        "vm_id": ok["id"],
        "image_sha256": "ab" * 32,
        "virtual_size_bytes": 1 << 30,
        "disk_size_bytes": 1 << 20,
        "file_path": file_path,
    }
    _report(api, node, ok["status"]["task_id"], {"status": "success", "result": result})
    error = {
        "code": "clone_failed",
        "message": f"[Errno 28] No space left on device: '{bad_path}'",
        "details": {"file_path": bad_path, "pool": pool},
    }
    _report(api, node, bad["status"]["task_id"], {"status": "failed", "error": error})

    dev, admin = _views(api, "developer", ok, bad), _views(api, "admin", ok, bad)
    leaks = [view for view, body in dev.items() if pool_path in json.dumps(body)]
    reliability.record(
        "host paths in a developer's VM and task views",
        injected=len(dev),
        survived=len(dev) - len(leaks),
        checked=len(dev) + len(admin),
        lost=len(leaks),
        detail="vm.create result file_path, a failure message and details quoting paths",
    )
    assert leaks == []

    # the task shows what the VM view shows, for each role
    for views, shown in ((dev, None), (admin, file_path)):
        assert views["vm"]["disks"][0]["file_path"] == shown
        assert views["task"]["result"]["file_path"] == shown
        [listed] = [t for t in views["task list"] if t["id"] == ok["status"]["task_id"]]
        assert listed["result"] == views["task"]["result"]
        assert views["failed task"]["error"]["message"] == views["failed vm"]["status"]["message"]
        [in_list] = [v for v in views["vm list"] if v["name"] == "red-bad"]
        assert in_list["status"]["message"] == views["failed vm"]["status"]["message"]
    assert dev["failed task"]["error"] == {
        "code": "clone_failed",
        "message": "[Errno 28] No space left on device: '<host path>'",
        "details": {"file_path": None, "pool": pool},
    }
    assert admin["failed task"]["error"] == error
    assert admin["task"]["result"] == result
    # the rest of the result is the developer's to see
    assert {k: v for k, v in dev["task"]["result"].items() if k != "file_path"} == {
        k: v for k, v in result.items() if k != "file_path"
    }
    with api.client("operator") as c:  # the full node view, like admin
        assert c.get(f"/v1/tasks/{ok['status']['task_id']}").json()["result"] == result

"""Helpers for the VM suites (no tests here): nodes, pools, VMs and the agent's side.

Everything goes through the real server over HTTP, as an operator, a user or a
node's agent would (``api`` / ``api_any_backend`` from tests/conftest.py);
``place`` runs one scheduler pass directly, as the issue asks tests to do.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import httpx

from otherix.api.workers.scheduler import schedule_pass
from support.factories import DIGEST as DIGEST
from support.factories import Node, heartbeat_body, join_node, pool_report

GIB = 1 << 30
IMAGE = "https://images.example.test/ubuntu-24.04-minimal-cloudimg-amd64.img"
SHA = "ab" * 32


#: A pool report with the VM suites' sizes (100 GiB, 80 free).
report = partial(pool_report, capacity=100 * GIB, available=80 * GIB)


def heartbeat(api: Any, node: Node, *pools: dict[str, Any], arch: str = "amd64") -> None:
    """Report as the node's agent; the first one makes the node ready (and gives
    it the ``default`` pool, pending until reported)."""
    body = heartbeat_body(list(pools), architecture=arch, digest=DIGEST)
    with api.client(None) as c:
        r = c.post(f"/v1/nodes/{node.name}/heartbeat", json=body, headers=node.auth)
        assert r.status_code == 200, r.text


def node_with_pool(api: Any, name: str, pool: str, *, arch: str = "amd64", **room: Any) -> Node:
    """A ready node with a ready instance of ``pool`` holding ``room`` (on a shared
    server, a test-unique pool keeps other tests' nodes out of its placements)."""
    node = ready_node(api, name, arch=arch)
    add_pool(api, node, pool, arch=arch, **room)
    return node


def ready_node(api: Any, name: str, *, arch: str = "amd64", **room: Any) -> Node:
    """A ready node whose ``default`` pool is reconciled ready with ``room``."""
    node = join_node(api, name)
    heartbeat(api, node, arch=arch)
    heartbeat(api, node, report("default", **room), arch=arch)
    return node


def add_pool(
    api: Any, node: Node, name: str, *, state: str = "ready", arch: str = "amd64", **room: Any
) -> dict[str, Any]:
    """A pool instance on ``node`` under ``{data_dir}/pools/``, reported ``state``."""
    prefix = f"{api.server.settings.data_dir}/pools/"
    with api.client("admin") as c:
        r = c.post(
            "/v1/storage-pools",
            json={"node": node.name, "name": name, "path": f"{prefix}{node.name}-{name}"},
        )
        assert r.status_code == 201, r.text
        pool = dict(r.json())
    if state != "pending":
        heartbeat(api, node, report(name, status=state, **room), arch=arch)
    return pool


def vm_body(name: str, **fields: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "image_url": IMAGE,
        "arch": "amd64",
        "vcpus": 2,
        "memory_mb": 2048,
    }
    body.update(fields)
    return body


def post_vm(api: Any, name: str, role: str = "developer", **fields: Any) -> httpx.Response:
    with api.client(role) as c:
        return c.post("/v1/vms", json=vm_body(name, **fields))


def create_vm(api: Any, name: str, role: str = "developer", **fields: Any) -> dict[str, Any]:
    r = post_vm(api, name, role, **fields)
    assert r.status_code == 201, r.text
    return dict(r.json())


def get_vm(api: Any, name: str, role: str = "admin") -> dict[str, Any]:
    with api.client(role) as c:
        r = c.get(f"/v1/vms/{name}")
        assert r.status_code == 200, r.text
        return dict(r.json())


def get(api: Any, path: str, role: str = "admin", **params: Any) -> httpx.Response:
    with api.client(role) as c:
        return c.get(path, params=params)


def place(api: Any) -> dict[str, int]:
    """One scheduler pass, called directly."""
    return schedule_pass(api.server.services.placement_service)


def desired_tasks(api: Any, node: Node) -> list[dict[str, Any]]:
    """The tasks in the node's desired state, read the way the agent does (watch)."""
    with api.client(None) as c:
        r = c.get(
            f"/v1/nodes/{node.name}/watch",
            params={"revision": 0, "timeout": 0},
            headers=node.auth,
        )
        assert r.status_code == 200, r.text
        return list(r.json()["desired"]["tasks"])


def agent_report(api: Any, node: Node, task_id: str, status: str, **fields: Any) -> httpx.Response:
    """Report a task outcome or progress as the node's agent."""
    with api.client(None) as c:
        return c.post(
            f"/v1/nodes/{node.name}/tasks/{task_id}",
            json={"status": status, **fields},
            headers=node.auth,
        )


def create_result(vm: dict[str, Any], pool_path: str, size: int = 10 * GIB) -> dict[str, Any]:
    """What the agent reports when a vm.create succeeds."""
    return {
        "vm_id": vm["id"],
        "image_sha256": SHA,
        "virtual_size_bytes": size,
        "disk_size_bytes": 3 * GIB,
        "file_path": f"{pool_path}/vms/{vm['id']}/disk.qcow2",
    }


def error_of(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == code, body
    return dict(body["error"])

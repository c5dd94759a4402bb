"""``vm move`` on a real agent (issue 16, deliverable 5): a stopped VM's disk copied to
another pool on its node, sha256 compared, the store switched, the source removed after;
a copy that is refused (no room on the agent's own check) leaves the VM on its pool.

Real control plane, real ``otherix-agent`` process in its own mount namespace, a real
qcow2 served over HTTP; the pools are directories of the node.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from otherix.api.services.secrets import transfer_secret
from support.clustervms import Pool, create_vm, get_vm, one_node, wait_phase
from support.harness import AgentProc, Cluster, wait_until
from support.images import ImageOrigin, qcow2


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def origin() -> Iterator[ImageOrigin]:
    with ImageOrigin() as o:
        yield o


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("move")
    config = {"images": {"allow_loopback_and_link_local": True}}
    with one_node(tmp, overrides={"agents.heartbeat_interval": 30}, agent_config=config) as (
        c,
        _node,
    ):
        yield c


@pytest.fixture
def node(cluster: Cluster) -> AgentProc:
    return cluster.nodes["node-a"]


def wait_task(cluster: Cluster, task_id: str, timeout: float = 30) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = cluster.admin.get(f"/v1/tasks/{task_id}").json()
        return body if body["status"] in ("success", "failed", "cancelled") else None

    return wait_until(done, timeout, f"task {task_id} finished")


def test_a_stopped_vm_moves_to_another_pool_with_its_bytes(
    cluster: Cluster, node: AgentProc, origin: ImageOrigin, tmp_path: Path
) -> None:
    image = qcow2(tmp_path, "mv.qcow2", data_mib=8)
    url = origin.serve("/img/mv.qcow2", image)
    src, dst = Pool(cluster, node, "mva"), Pool(cluster, node, "mvb")
    vm = create_vm(cluster, "mover", src, url, power_state="stopped")
    wait_phase(cluster, "mover", "stopped")
    disk = src.vm_dir(vm["id"]) / "disk.qcow2"
    before = sha(disk)
    with (disk.parent / "marker").open("w") as fh:  # stays with the source, goes with it
        fh.write("x")

    r = cluster.admin.post("/v1/vms/mover/move", json={"pool": "mvb"})
    assert r.status_code == 202, r.text
    task = wait_task(cluster, r.json()["task_id"])
    assert task["status"] == "success", task
    assert task["result"]["sha256"] == before
    assert task["result"]["method"] in ("reflink", "copy")
    moved = dst.vm_dir(vm["id"]) / "disk.qcow2"
    assert sha(moved) == before
    view = get_vm(cluster, "mover")
    assert (view["pool"], view["pool_id"], view["status"]["phase"]) == ("mvb", dst.id, "stopped")
    assert view["disks"][0]["file_path"] == f"{dst.path}/vms/{vm['id']}/disk.qcow2"
    # the source goes only after the switch, by its own task
    wait_until(lambda: not src.vm_dir(vm["id"]).exists() or None, 20, "source removed")
    assert sha(moved) == before
    assert src.delete().status_code == 204  # nothing of the VM is left on it
    assert dst.delete().status_code == 409  # the disk lives here now
    # and back again: the removal of the first move's source never touches the new copy
    third = Pool(cluster, node, "mvc")
    r = cluster.admin.post("/v1/vms/mover/move", json={"pool": "mvc"})
    assert r.status_code == 202, r.text
    assert wait_task(cluster, r.json()["task_id"])["status"] == "success"
    wait_until(lambda: not dst.vm_dir(vm["id"]).exists() or None, 20, "second source removed")
    assert sha(third.vm_dir(vm["id"]) / "disk.qcow2") == before
    assert get_vm(cluster, "mover")["pool"] == "mvc"


def test_a_vm_moves_to_another_node_through_the_agents_transfer_endpoints(
    cluster: Cluster, node: AgentProc, origin: ImageOrigin, tmp_path: Path
) -> None:
    other = cluster.nodes.get("node-b") or cluster.add_node("node-b")
    cluster.wait_node_status("node-b", "ready", timeout=20)
    image = qcow2(tmp_path, "far.qcow2", data_mib=6)
    url = origin.serve("/img/far.qcow2", image)
    src, dst = Pool(cluster, node, "xa"), Pool(cluster, other, "xb")
    # both agents report where they serve disks (harness: 127.0.0.1, a free port each)
    urls = {}
    for name in ("node-a", "node-b"):
        caps = cluster.admin.get(f"/v1/nodes/{name}").json().get("capabilities") or {}
        urls[name] = caps.get("transfer_url")
    assert all(u and u.startswith("http://127.0.0.1:") for u in urls.values()), urls
    assert urls["node-a"] != urls["node-b"]
    vm = create_vm(cluster, "traveller", src, url, power_state="stopped")
    wait_phase(cluster, "traveller", "stopped")
    before = sha(src.vm_dir(vm["id"]) / "disk.qcow2")
    # without --node a pool that exists only on another node is refused, nothing made
    r = cluster.admin.post("/v1/vms/traveller/move", json={"pool": "xb"})
    assert r.status_code == 400, r.text
    assert "--node node-b" in r.json()["error"]["message"]
    r = cluster.admin.post("/v1/vms/traveller/move", json={"pool": "xb", "node": "node-b"})
    assert r.status_code == 202, r.text
    task = wait_task(cluster, r.json()["task_id"], timeout=60)
    assert task["status"] == "success", task
    assert (task["result"]["method"], task["result"]["sha256"]) == ("transfer", before)
    assert sha(dst.vm_dir(vm["id"]) / "disk.qcow2") == before
    view = get_vm(cluster, "traveller")
    assert (view["node"], view["pool"], view["status"]["phase"]) == ("node-b", "xb", "stopped")
    wait_until(lambda: not src.vm_dir(vm["id"]).exists() or None, 20, "source removed")
    # the ticket was revoked with the move: the source's endpoint serves it no more, not
    # even to the right secret
    tasks = cluster.admin.get("/v1/tasks", params={"resource_id": vm["id"], "limit": 50}).json()
    [export] = [t for t in tasks["data"] if t["type"] == "vm.export"]
    assert export["status"] == "success"
    server = cluster._server()  # the control plane runs in this process
    with server.deps.db.read() as conn:
        row = server.deps.db.tasks.get_task(conn, export["id"])
    assert row is not None
    ticket = str(row.args["ticket"])
    secret = transfer_secret(server.deps.jwt_secret, ticket)
    for auth in (f"Bearer {secret}", "Bearer nothing", None):
        headers = {"Authorization": auth} if auth else {}
        for path in (f"/v1/transfers/{ticket}", f"/v1/transfers/{ticket}/sha256"):
            r = httpx.get(f"{urls['node-a']}{path}", headers=headers, timeout=5)
            assert r.status_code == 403, (path, auth, r.status_code)
    r = httpx.get(f"{urls['node-a']}/v1/transfers/{uuid4()}", timeout=5)
    assert r.status_code == 403

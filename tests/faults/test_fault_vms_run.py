"""VMs run: faults and bad input on a real cluster (issue 15, "Bad input and faults").

- ``kill -9`` of the agent with two VMs running: the same QEMU pids after its restart
  (re-attached, never started twice), and both stop cleanly afterwards;
- ``kill -9`` of a QEMU: ``crashed`` with its exit, then the restart policy
  (``on-failure`` starts it again; ``never`` leaves it crashed);
- ``start`` refused, with nothing started, while the disk is missing, the pool is failed
  or the node is unreachable; a corrupt disk: ``failed`` with QEMU's own message;
- two starts at once: one task, one QEMU.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.harness import FAST, AgentProc, Cluster, ControlPlane, wait_until
from support.images import ImageOrigin

pytestmark = [pytest.mark.slow]  # TCG boots of a real kernel

AGENT = {"images": {"allow_loopback_and_link_local": True}}
SMALL = {"vcpus": 1, "memory_mb": 256, "arch": "amd64"}


@pytest.fixture
def world(tmp_path: Path, test_guest: Path) -> Iterator[tuple[Cluster, AgentProc, str]]:
    cp = ControlPlane(tmp_path / "api", overrides=FAST).start()
    try:
        with (
            ImageOrigin(test_guest.read_bytes()) as origin,
            Cluster(cp, tmp_path, agent_config=AGENT) as cluster,
        ):
            node = cluster.add_node("node-a", runs_vms=True)
            cluster.wait_pool_status("node-a", "default", "ready", timeout=20)
            yield cluster, node, origin.serve("guest.qcow2", test_guest.read_bytes())
    finally:
        cp.stop()


def _get(cluster: Cluster, name: str) -> dict[str, Any]:
    r = cluster.admin.get(f"/v1/vms/{name}")
    r.raise_for_status()
    return dict(r.json())


def _wait_state(cluster: Cluster, name: str, state: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        vm = _get(cluster, name)
        return vm if vm["status"]["state"] == state else None

    return wait_until(check, timeout=timeout, what=f"{name} {state}")


def _task(cluster: Cluster, task_id: str, timeout: float = 90) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        task = cluster.admin.get(f"/v1/tasks/{task_id}").json()
        return task if task["status"] in ("success", "failed", "cancelled") else None

    return wait_until(check, timeout=timeout, what=f"task {task_id}")


def _create(cluster: Cluster, name: str, url: str, **fields: Any) -> dict[str, Any]:
    r = cluster.admin.post("/v1/vms", json={"name": name, "image_url": url, **SMALL, **fields})
    assert r.status_code == 201, r.text

    def ready() -> dict[str, Any] | None:
        vm = _get(cluster, name)
        return vm if vm["status"]["phase"] == "stopped" else None

    return wait_until(ready, timeout=90, what=f"{name}'s disk")


def _power(cluster: Cluster, name: str, action: str, **body: Any) -> httpx.Response:
    return cluster.admin.post(f"/v1/vms/{name}/{action}", json=body or None)


def _error(r: httpx.Response) -> dict[str, Any]:
    return dict(r.json()["error"])


def test_kill_9_of_the_agent_leaves_both_vms_running_and_reattaches(world) -> None:
    cluster, node, url = world
    a = _create(cluster, "a", url)
    b = _create(cluster, "b", url)
    _wait_state(cluster, "a", "running")
    _wait_state(cluster, "b", "running")
    pids = node.qemu_pids()
    assert set(pids) == {a["id"], b["id"]}

    node.kill(signal.SIGKILL)
    assert node.qemu_pids() == pids  # the VMs outlive their agent
    node.start()
    node.wait_log("re-attached to 2 VM(s)", timeout=20)
    time.sleep(2)  # a supervisor tick or two: nothing may be started again
    assert node.qemu_pids() == pids
    for name, vm in (("a", a), ("b", b)):
        seen = _wait_state(cluster, name, "running")
        assert seen["status"]["runtime"]["pid"] == pids[vm["id"]]

    for name in ("a", "b"):
        r = _power(cluster, name, "stop", timeout_seconds=30)
        assert r.status_code == 202, r.text
        assert _task(cluster, r.json()["task_id"])["status"] == "success"
        _wait_state(cluster, name, "stopped")
    assert node.qemu_pids() == {}


def test_kill_9_of_qemu_is_crashed_then_the_restart_policy(world) -> None:
    cluster, node, url = world
    again = _create(cluster, "again", url)
    never = _create(cluster, "never", url, restart_policy="never")
    _wait_state(cluster, "again", "running")
    _wait_state(cluster, "never", "running")
    pids = node.qemu_pids()

    os.kill(pids[never["id"]], signal.SIGKILL)
    crashed = _wait_state(cluster, "never", "crashed")
    assert crashed["status"]["runtime"]["exit_status"] == -9
    assert crashed["status"]["runtime"]["detail"] == "killed by SIGKILL"
    time.sleep(3)  # the policy says never: it stays crashed
    assert _get(cluster, "never")["status"]["state"] == "crashed"
    assert never["id"] not in node.qemu_pids()

    old = pids[again["id"]]
    os.kill(old, signal.SIGKILL)

    def restarted_vm() -> dict[str, Any] | None:
        vm = _get(cluster, "again")
        running = vm["status"]["state"] == "running"
        return vm if running and vm["status"]["runtime"]["pid"] != old else None

    restarted = wait_until(restarted_vm, timeout=60, what="again restarted by on-failure")
    assert restarted["status"]["runtime"]["restarts"] == 1
    assert node.qemu_pids()[again["id"]] == restarted["status"]["runtime"]["pid"]


def test_start_is_refused_cleanly_and_nothing_starts(world) -> None:
    cluster, node, url = world
    vm = _create(cluster, "idle", url, power_state="stopped")
    assert vm["status"]["state"] == "stopped"
    assert vm["power_state"] == "stopped"
    assert node.qemu_pids() == {}
    disk = node.host_path(vm["disks"][0]["file_path"])

    # Two starts at once: one task, one QEMU.
    answers: list[httpx.Response] = []
    threads = [
        threading.Thread(target=lambda: answers.append(_power(cluster, "idle", "start")))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in answers) == [202, 202], [r.text for r in answers]
    assert len({r.json()["task_id"] for r in answers}) == 1
    assert _task(cluster, answers[0].json()["task_id"])["status"] == "success"
    assert len(node.qemu_pids()) == 1
    r = _power(cluster, "idle", "poweroff")
    assert _task(cluster, r.json()["task_id"])["status"] == "success"
    _wait_state(cluster, "idle", "stopped")

    # A corrupt disk: the start fails with QEMU's own message, not a hang.
    saved = disk.with_suffix(".saved")
    shutil.copyfile(disk, saved)
    with disk.open("r+b") as fh:
        fh.write(b"\0" * 4096)
    r = _power(cluster, "idle", "start")
    task = _task(cluster, r.json()["task_id"])
    assert task["status"] == "failed"
    assert task["error"]["code"] == "vm_start_failed"
    failed = _wait_state(cluster, "idle", "failed")
    assert "qemu-system-x86_64" in failed["status"]["runtime"]["detail"]
    assert node.qemu_pids() == {}
    shutil.copyfile(saved, disk)

    # The disk file gone: the agent reports it missing and a start is refused.
    disk.rename(saved)
    wait_until(
        lambda: _get(cluster, "idle")["status"]["reason"] == "disk_missing" or None,
        timeout=30,
        what="disk_missing",
    )
    r = _power(cluster, "idle", "start")
    assert r.status_code == 409, r.text
    assert _error(r)["code"] == "vm_not_startable"
    assert _error(r)["details"]["reason"] == "disk_missing"
    saved.rename(disk)

    # The node unreachable: refused, nothing started.
    node.stop()
    cluster.wait_node_status("node-a", "unreachable", timeout=30)
    r = _power(cluster, "idle", "start")
    assert r.status_code == 409, r.text
    assert _error(r)["details"]["reason"] == "node_unreachable"
    assert node.qemu_pids() == {}


def test_start_is_refused_while_the_pool_is_failed(world) -> None:
    cluster, node, url = world
    vm = _create(cluster, "p", url, power_state="stopped")
    root = node.host_path("/var/lib/otherix/pools/default")
    marker = next(root.glob(".otherix-pool*"))
    hidden = root.parent / "marker.saved"
    marker.rename(hidden)  # the identity marker gone: the pool is failed
    cluster.wait_pool_status("node-a", "default", "failed", timeout=30)
    r = _power(cluster, "p", "start")
    assert r.status_code == 409, r.text
    assert _error(r)["code"] == "vm_not_startable"
    assert _error(r)["details"]["reason"] == "pool_failed"
    assert node.qemu_pids() == {}
    assert vm["id"]

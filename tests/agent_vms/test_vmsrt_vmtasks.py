"""VM tasks with a VM host (otherix.agent.vmtasks over vmpower and vms): power tasks on
their worker threads, a create that starts its VM, and a delete that never removes the
disk of a running QEMU unless forced. A real pool, a real image cache fed by a loopback
image origin, real QEMUs; reports go to a spy through a real ``TaskOutbox``."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from vmshelpers import qemus, wait_for

from otherix.agent.fs import ProtectedRoots
from otherix.agent.images import ImageCache, ImageCacheSettings, KeyedLocks
from otherix.agent.outbox import TaskOutbox
from otherix.agent.pools import PoolReconciler
from otherix.agent.report import PoolState
from otherix.agent.vmpower import VmHost
from otherix.agent.vms import VmRuntime
from otherix.agent.vms.supervisor import VmSupervisor
from otherix.agent.vmtasks import VmTasks
from otherix.models.heartbeat import AgentTask, DeclaredPool, TaskUpdate, VmObservation
from support.images import ImageOrigin, qcow2
from support.reporters import SpyReporter

POOL = "/var/lib/otherix/pools/p1"


class Node:
    def __init__(self, base: Path, rt: VmRuntime) -> None:
        protected = ProtectedRoots()  # shared by the reconciler and the cache
        self.base = base
        self.pools = PoolState(
            PoolReconciler(protected=protected),
            allowed_prefixes=["/var/lib/otherix/pools/"],
            host_root=base / "host",
        )
        self.pools.reconcile([DeclaredPool(name="p1", type="local_dir", path=POOL)])
        self.root = Path(str(base / "host") + POOL)
        self.cache = ImageCache(
            ImageCacheSettings(allowed_networks=("127.0.0.1/32",), progress_interval=0.0),
            locks=KeyedLocks(),
            protected=protected,
        )
        self.runtime = rt
        self.supervisor = VmSupervisor(rt)
        self.host = VmHost(self.supervisor, accel="tcg", qemu_binary="qemu-system-x86_64")
        self.reporter = SpyReporter()
        self.outbox = TaskOutbox(self.reporter, "n1", interval=0.0).start()
        self.tasks: list[VmTasks] = []

    def start(self, *, host: bool = True) -> VmTasks:
        vms = VmTasks(
            cache=self.cache,
            pools=self.pools,
            outbox=self.outbox,
            retry_delay=0.0,
            host=self.host if host else None,
        )
        self.tasks.append(vms)
        return vms

    def run(self, vms: VmTasks, task: AgentTask, timeout: float = 20.0) -> TaskUpdate:
        assert vms.submit(task)
        deadline = time.monotonic() + timeout
        while True:
            final = [u for u in self.reporter.of(task.id) if u.status != "running"]
            if final:
                return final[-1]
            assert time.monotonic() < deadline, f"no outcome for {task.type}"
            time.sleep(0.02)

    def disk_dir(self, vm_id: str) -> Path:
        return self.root / "vms" / vm_id

    def close(self) -> None:
        for vms in self.tasks:
            vms.close()
        self.outbox.close()


@pytest.fixture
def node(base: Path, runtime: Callable[..., VmRuntime]) -> Iterator[Node]:
    n = Node(base, runtime())
    yield n
    n.close()


@pytest.fixture
def origin(base: Path) -> Iterator[ImageOrigin]:
    with ImageOrigin(qcow2(base, "served.qcow2")) as o:
        yield o


def task(task_type: str, vm_id: str, **args: Any) -> AgentTask:
    body = {
        "vm_id": vm_id,
        "name": "web-1",
        "pool_name": "p1",
        "pool_path": POOL,
        "format": "qcow2",
        "vcpus": 1,
        "memory_mb": 64,
        "timeout_seconds": 1,
        **args,
    }
    return AgentTask(id=str(uuid.uuid4()), type=task_type, args=body)


def create(vm_id: str, url: str, **args: Any) -> AgentTask:
    return task(
        "vm.create",
        vm_id,
        image_url=url,
        image_sha256=None,
        pull_policy="if-not-present",
        disk_gib=0,
        **args,
    )


def running_vm(node: Node, vms: VmTasks, origin: ImageOrigin) -> tuple[str, int]:
    vm_id = str(uuid.uuid4())
    done = node.run(vms, create(vm_id, origin.url, start=True))
    assert done.status == "success", done.error
    assert done.result is not None
    assert done.result["power"]["state"] == "running", done.result["power"]
    return vm_id, done.result["power"]["pid"]


def test_a_create_with_start_runs_the_vm(node: Node, origin: ImageOrigin, base: Path) -> None:
    vms = node.start()
    vm_id = str(uuid.uuid4())
    made = create(vm_id, origin.url, start=True)
    done = node.run(vms, made)
    assert done.status == "success", done.error
    assert done.result is not None
    assert done.result["vm_id"] == vm_id
    power = VmObservation.model_validate(done.result["power"])
    assert power.id == vm_id
    assert power.state == "running"
    assert qemus(str(base)) == [power.pid]
    assert node.runtime.launch_of(vm_id).disk_path == node.disk_dir(vm_id) / "disk.qcow2"
    # the start was reported as a phase before the outcome
    phases = [u.result.get("phase") for u in node.reporter.of(made.id) if u.result]
    assert "start" in phases


def test_a_create_whose_start_fails_still_succeeds(node: Node, origin: ImageOrigin) -> None:
    vms = node.start(host=False)  # no VM host: the start fails, the disk is made
    vm_id = str(uuid.uuid4())
    done = node.run(vms, create(vm_id, origin.url, start=True))
    assert done.status == "success", done.error
    assert done.result is not None
    assert done.result["power"]["state"] == "failed"
    assert done.result["power"]["id"] == vm_id
    assert "QEMU" in done.result["power"]["detail"]
    assert (node.disk_dir(vm_id) / "disk.qcow2").is_file()


def test_a_create_without_start_starts_nothing(node: Node, origin: ImageOrigin, base: Path) -> None:
    vms = node.start()
    done = node.run(vms, create(str(uuid.uuid4()), origin.url))
    assert done.status == "success", done.error
    assert done.result is not None
    assert "power" not in done.result
    assert qemus(str(base)) == []


def test_power_tasks_report_the_observation(node: Node, origin: ImageOrigin, base: Path) -> None:
    vms = node.start()
    vm_id = str(uuid.uuid4())
    assert node.run(vms, create(vm_id, origin.url)).status == "success"

    started = node.run(vms, task("vm.start", vm_id))
    assert started.status == "success", started.error
    assert (started.progress, started.attempt, started.max_attempts) == (100, 1, 1)
    assert started.result is not None
    obs = VmObservation.model_validate(started.result)
    assert (obs.id, obs.state) == (vm_id, "running")
    assert qemus(str(base)) == [obs.pid]

    restarted = node.run(vms, task("vm.restart", vm_id))
    assert restarted.status == "success", restarted.error
    assert restarted.result is not None
    assert restarted.result["state"] == "running"
    assert restarted.result["pid"] not in (None, obs.pid)

    stopped = node.run(vms, task("vm.stop", vm_id))
    assert stopped.status == "success", stopped.error
    assert stopped.result is not None
    assert stopped.result["state"] == "stopped"
    assert qemus(str(base)) == []

    assert node.run(vms, task("vm.start", vm_id)).status == "success"
    off = node.run(vms, task("vm.poweroff", vm_id))
    assert off.status == "success", off.error
    assert off.result is not None
    assert off.result["state"] == "stopped"
    assert qemus(str(base)) == []


def test_power_tasks_without_a_vm_host_are_vm_unavailable(node: Node) -> None:
    vms = node.start(host=False)
    for verb in ("vm.start", "vm.stop", "vm.restart", "vm.poweroff"):
        done = node.run(vms, task(verb, str(uuid.uuid4())))
        assert done.status == "failed"
        assert done.error is not None
        assert done.error["code"] == "vm_unavailable"


def test_a_failing_start_task_reports_vm_start_failed(node: Node) -> None:
    vms = node.start()
    vm_id = str(uuid.uuid4())
    disk = node.disk_dir(vm_id) / "disk.qcow2"
    disk.parent.mkdir(parents=True)
    disk.write_bytes(b"not a qcow2 image" * 4096)
    done = node.run(vms, task("vm.start", vm_id))
    assert done.status == "failed"
    assert done.error is not None
    assert done.error["code"] == "vm_start_failed"
    assert "qcow2" in done.error["message"]
    missing = node.run(vms, task("vm.start", str(uuid.uuid4())))
    assert missing.error is not None
    assert missing.error["code"] == "disk_missing"


def test_deleting_a_running_vm_without_force_fails_and_keeps_it(
    node: Node, origin: ImageOrigin, base: Path
) -> None:
    vms = node.start()
    vm_id, pid = running_vm(node, vms, origin)
    done = node.run(vms, task("vm.delete", vm_id, file_path=None))
    assert done.status == "failed"
    assert done.error is not None
    assert done.error["code"] == "vm_running"
    assert "--force" in done.error["message"]
    assert qemus(str(base)) == [pid]
    assert (node.disk_dir(vm_id) / "disk.qcow2").is_file()
    assert (base / "run" / vm_id / "state.json").is_file()
    # still supervised and reported
    node.supervisor.tick()
    assert [(o.id, o.state) for o in node.supervisor.observations()] == [(vm_id, "running")]


def test_deleting_a_running_vm_with_force_powers_it_off_and_removes_it(
    node: Node, origin: ImageOrigin, base: Path
) -> None:
    vms = node.start()
    vm_id, _ = running_vm(node, vms, origin)
    node.supervisor.tick()
    done = node.run(vms, task("vm.delete", vm_id, file_path=None, force=True))
    assert done.status == "success", done.error
    assert done.result == {"vm_id": vm_id, "removed": True}
    assert qemus(str(base)) == []
    assert not node.disk_dir(vm_id).exists()
    assert not (base / "run" / vm_id).exists()
    assert node.runtime.vm_ids() == []
    assert node.supervisor.observations() == []
    node.supervisor.tick()  # nothing comes back
    assert node.supervisor.observations() == []
    assert qemus(str(base)) == []


def test_deleting_a_stopped_vm_needs_no_force(node: Node, origin: ImageOrigin, base: Path) -> None:
    vms = node.start()
    vm_id, _ = running_vm(node, vms, origin)
    assert node.run(vms, task("vm.poweroff", vm_id)).status == "success"
    done = node.run(vms, task("vm.delete", vm_id, file_path=None))
    assert done.status == "success", done.error
    assert done.result == {"vm_id": vm_id, "removed": True}
    assert not (base / "run" / vm_id).exists()
    assert node.runtime.vm_ids() == []
    node.supervisor.tick()
    assert node.supervisor.observations() == []


def test_a_vm_held_for_its_delete_is_not_restarted(
    node: Node, origin: ImageOrigin, base: Path
) -> None:
    """The delete holds the VM (``forget``) before anything else: a QEMU that ends
    meanwhile is not restarted by its policy, even with no backoff at all."""
    vms = node.start()
    vm_id, pid = running_vm(node, vms, origin)
    node.supervisor.backoff_initial = 0.0  # a crash would be restarted on the next tick
    node.supervisor.forget(vm_id)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not node.runtime.alive(vm_id))
    for _ in range(3):
        node.supervisor.tick()
    assert qemus(str(base)) == []
    done = node.run(vms, task("vm.delete", vm_id, file_path=None))
    assert done.status == "success", done.error
    assert node.runtime.vm_ids() == []
    assert not (base / "run" / vm_id).exists()


def test_a_refused_delete_never_drops_the_vm_from_the_reports(
    node: Node, origin: ImageOrigin
) -> None:
    vms = node.start()
    vm_id, pid = running_vm(node, vms, origin)
    node.supervisor.tick()
    before = node.supervisor.observations()
    assert [o.pid for o in before] == [pid]
    done = node.run(vms, task("vm.delete", vm_id, file_path=None))
    assert done.error is not None
    assert done.error["code"] == "vm_running"
    # no tick in between: what the daemon would send right now
    assert node.supervisor.observations() == before


def test_deleting_a_vm_never_started_here(node: Node, origin: ImageOrigin, base: Path) -> None:
    vms = node.start()
    vm_id = str(uuid.uuid4())
    assert node.run(vms, create(vm_id, origin.url)).status == "success"
    done = node.run(vms, task("vm.delete", vm_id, file_path=None))
    assert done.status == "success", done.error
    assert done.result == {"vm_id": vm_id, "removed": True}
    assert not node.disk_dir(vm_id).exists()
    assert not (base / "run" / vm_id).exists()
    assert node.runtime.vm_ids() == []

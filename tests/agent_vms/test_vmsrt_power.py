"""The power tasks' work (otherix.agent.vmpower) over a real pool, real disks and real
QEMUs: argument checks, the VM's disk found from the pool registry, and start, stop,
restart and power-off driving the runtime through the supervisor."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from vmshelpers import qemus, wait_for

from otherix.agent import vmpower
from otherix.agent.fs import ProtectedRoots
from otherix.agent.pools import PoolReconciler
from otherix.agent.report import PoolState
from otherix.agent.vmpower import VmHost
from otherix.agent.vms import VmRuntime
from otherix.agent.vms.supervisor import VmSupervisor
from otherix.agent.vmwork import TaskFailure
from otherix.models.heartbeat import DeclaredPool, VmObservation

POOL = "/var/lib/otherix/pools/p1"


class Node:
    """One node: a real pool ``p1`` (under ``base/host``) and a VM host over ``runtime``."""

    def __init__(self, base: Path, rt: VmRuntime) -> None:
        self.base = base
        self.pools = PoolState(
            PoolReconciler(protected=ProtectedRoots()),
            allowed_prefixes=["/var/lib/otherix/pools/"],
            host_root=base / "host",
        )
        self.pools.reconcile([DeclaredPool(name="p1", type="local_dir", path=POOL)])
        self.root = Path(str(base / "host") + POOL)
        self.runtime = rt
        self.supervisor = VmSupervisor(rt)
        self.host = VmHost(self.supervisor, accel="tcg", qemu_binary="qemu-system-x86_64")

    def disk(self, vm_id: str, fmt: str = "qcow2") -> Path:
        path = self.root / "vms" / vm_id / f"disk.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", fmt, str(path), "64M"], check=True, timeout=30
        )
        return path

    def run(self, task_type: str, **args: Any) -> dict[str, Any]:
        return vmpower.run(self.pools, self.host, task_type, vmpower.PowerArgs.parse(args))


def power_args(vm_id: str, /, **kw: Any) -> dict[str, Any]:
    return {
        "vm_id": vm_id,
        "name": "web-1",
        "pool_name": "p1",
        "pool_path": POOL,
        "format": "qcow2",
        "vcpus": 1,
        "memory_mb": 64,
        "restart_policy": "on-failure",
        "timeout_seconds": 1,
        **kw,
    }


@pytest.fixture
def node(base: Path, runtime: Callable[..., VmRuntime]) -> Node:
    return Node(base, runtime())


def failure(call: Callable[[], object]) -> TaskFailure:
    with pytest.raises(TaskFailure) as caught:
        call()
    return caught.value


# -- PowerArgs ------------------------------------------------------------------------


def test_power_args_defaults() -> None:
    vm_id = str(uuid.uuid4())
    args = vmpower.PowerArgs.parse({"vm_id": vm_id.upper(), "name": "web-1"})
    assert args.vm_id == vm_id  # canonical
    assert args.pool_name is None
    assert args.pool_path is None
    assert args.format == "qcow2"
    assert args.vcpus == 1
    assert args.memory_mb == 256
    assert args.restart_policy == "on-failure"
    assert args.timeout == 60.0
    assert vmpower.PowerArgs.parse(power_args(vm_id, restart_policy="never")).restart_policy == (
        "never"
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"vm_id": "not-a-uuid"},
        {"vm_id": None},
        {"name": ""},
        {"name": 7},
        {"format": "vmdk"},
        {"restart_policy": "sometimes"},
        {"vcpus": 0},
        {"vcpus": True},
        {"vcpus": "2"},
        {"memory_mb": 8},
        {"timeout_seconds": 0},
        {"timeout_seconds": 3601},
        {"timeout_seconds": 1.5},
        {"pool_name": ""},
        {"pool_path": 3},
    ],
)
def test_power_args_reject_malformed_args(bad: dict[str, Any]) -> None:
    args = power_args(str(uuid.uuid4()), **bad)
    err = failure(lambda: vmpower.PowerArgs.parse(args))
    assert err.code == "validation_failed"
    assert not err.retryable


def test_power_args_need_a_name() -> None:
    args = power_args(str(uuid.uuid4()))
    del args["name"]
    assert failure(lambda: vmpower.PowerArgs.parse(args)).code == "validation_failed"


# -- launch_of ------------------------------------------------------------------------


def test_launch_of_an_unknown_pool_is_pool_not_ready(node: Node) -> None:
    args = vmpower.PowerArgs.parse(power_args(str(uuid.uuid4()), pool_name="nope"))
    err = failure(lambda: vmpower.launch_of(node.pools, node.host, args))
    assert err.code == "pool_not_ready"
    assert '"nope"' in err.message


def test_launch_of_a_pool_at_another_path_is_pool_not_ready(node: Node) -> None:
    args = vmpower.PowerArgs.parse(
        power_args(str(uuid.uuid4()), pool_path="/var/lib/otherix/pools/elsewhere")
    )
    assert failure(lambda: vmpower.launch_of(node.pools, node.host, args)).code == (
        "pool_not_ready"
    )


def test_launch_of_without_a_disk_is_disk_missing(node: Node) -> None:
    vm_id = str(uuid.uuid4())
    args = vmpower.PowerArgs.parse(power_args(vm_id))
    assert failure(lambda: vmpower.launch_of(node.pools, node.host, args)).code == "disk_missing"
    # no pool at all: the VM never got a disk
    no_pool = vmpower.PowerArgs.parse(power_args(vm_id, pool_name=None, pool_path=None))
    assert failure(lambda: vmpower.launch_of(node.pools, node.host, no_pool)).code == (
        "disk_missing"
    )
    # a disk of the other format is not this VM's disk
    node.disk(vm_id, "raw")
    assert failure(lambda: vmpower.launch_of(node.pools, node.host, args)).code == "disk_missing"


def test_launch_of_a_disk_that_is_not_a_regular_file_is_disk_missing(node: Node) -> None:
    vm_id = str(uuid.uuid4())
    args = vmpower.PowerArgs.parse(power_args(vm_id))
    directory = node.root / "vms" / vm_id / "disk.qcow2"
    directory.mkdir(parents=True)
    assert failure(lambda: vmpower.launch_of(node.pools, node.host, args)).code == "disk_missing"
    directory.rmdir()
    elsewhere = node.base / "elsewhere.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(elsewhere), "1M"], check=True)
    directory.symlink_to(elsewhere)  # a symlink out of the pool is not followed
    assert failure(lambda: vmpower.launch_of(node.pools, node.host, args)).code == "disk_missing"


def test_launch_of_names_the_disk_from_the_registry(node: Node) -> None:
    vm_id = str(uuid.uuid4())
    disk = node.disk(vm_id)
    args = vmpower.PowerArgs.parse(power_args(vm_id, restart_policy="always", vcpus=2))
    launch = vmpower.launch_of(node.pools, node.host, args)
    assert launch.disk_path == disk
    assert launch.vm_dir == disk.parent
    assert launch.disk_format == "qcow2"
    assert (launch.vcpus, launch.memory_mb, launch.accel) == (2, 64, "tcg")
    assert launch.restart_policy == "always"
    assert launch.name == "web-1"


# -- run ------------------------------------------------------------------------------


def test_start_stop_poweroff_and_restart(node: Node, base: Path) -> None:
    vm_id = str(uuid.uuid4())
    node.disk(vm_id)

    started = node.run(vmpower.VM_START, **power_args(vm_id, restart_policy="never"))
    obs = VmObservation.model_validate(started)  # the result is the observation, as JSON
    assert obs.id == vm_id
    assert obs.state == "running"
    assert obs.accelerator == "tcg"
    assert obs.pid is not None
    assert qemus(str(base)) == [obs.pid]
    assert node.runtime.launch_of(vm_id).restart_policy == "never"
    assert [o.id for o in node.supervisor.observations()] == [vm_id]

    # a start of a running VM starts nothing
    assert node.run(vmpower.VM_START, **power_args(vm_id))["pid"] == obs.pid
    assert qemus(str(base)) == [obs.pid]

    restarted = node.run(vmpower.VM_RESTART, **power_args(vm_id))
    assert restarted["state"] == "running"
    assert restarted["pid"] not in (None, obs.pid)
    assert qemus(str(base)) == [restarted["pid"]]

    # the blank disk's BIOS ignores ACPI: powered off once timeout_seconds (1 s) passed
    stopped = node.run(vmpower.VM_STOP, **power_args(vm_id))
    assert stopped["state"] == "stopped"
    assert stopped["pid"] is None
    assert qemus(str(base)) == []
    assert node.supervisor.observations()[0].state == "stopped"

    # a restart of a stopped VM starts it
    again = node.run(vmpower.VM_RESTART, **power_args(vm_id))
    assert again["state"] == "running"
    off = node.run(vmpower.VM_POWEROFF, **power_args(vm_id))
    assert off["state"] == "stopped"
    assert qemus(str(base)) == []
    # stopping a stopped VM is fine
    assert node.run(vmpower.VM_POWEROFF, **power_args(vm_id))["state"] == "stopped"
    assert node.run(vmpower.VM_STOP, **power_args(vm_id))["state"] == "stopped"


def test_stop_of_a_vm_never_started_here_answers_stopped(node: Node, base: Path) -> None:
    vm_id = str(uuid.uuid4())
    for verb in (vmpower.VM_STOP, vmpower.VM_POWEROFF):
        assert node.run(verb, **power_args(vm_id)) == {"id": vm_id, "state": "stopped"}
    assert qemus(str(base)) == []


def test_start_without_a_vm_host_is_vm_unavailable(node: Node) -> None:
    vm_id = str(uuid.uuid4())
    node.disk(vm_id)
    args = vmpower.PowerArgs.parse(power_args(vm_id))
    for verb in sorted(vmpower.POWER_TYPES):
        err = failure(functools.partial(vmpower.run, node.pools, None, verb, args))
        assert err.code == "vm_unavailable"


def test_start_of_a_missing_disk_fails_before_qemu(node: Node, base: Path) -> None:
    vm_id = str(uuid.uuid4())
    err = failure(lambda: node.run(vmpower.VM_START, **power_args(vm_id)))
    assert err.code == "disk_missing"
    assert qemus(str(base)) == []
    assert node.runtime.vm_ids() == []


def test_a_corrupt_disk_is_vm_start_failed_with_qemus_message(node: Node, base: Path) -> None:
    vm_id = str(uuid.uuid4())
    disk = node.root / "vms" / vm_id / "disk.qcow2"
    disk.parent.mkdir(parents=True)
    disk.write_bytes(os.urandom(64 * 1024))
    err = failure(lambda: node.run(vmpower.VM_START, **power_args(vm_id)))
    assert err.code == "vm_start_failed"
    assert "qcow2" in err.message  # QEMU's own words: "Image is not in qcow2 format"
    assert err.details == {"state": "failed"}
    assert qemus(str(base)) == []
    [obs] = node.supervisor.observations()
    assert obs.state == "failed"
    assert obs.detail == err.message


def test_memory_the_node_does_not_have_is_vm_start_failed(node: Node) -> None:
    vm_id = str(uuid.uuid4())
    node.disk(vm_id)
    err = failure(
        lambda: node.run(vmpower.VM_START, **power_args(vm_id, memory_mb=16 * 1024 * 1024))
    )
    assert err.code == "vm_start_failed"
    assert err.message


# -- start_after_create ---------------------------------------------------------------


def test_start_after_create_starts_the_vm(node: Node, base: Path) -> None:
    vm_id = str(uuid.uuid4())
    node.disk(vm_id)
    result = vmpower.start_after_create(node.pools, node.host, power_args(vm_id))
    assert result["id"] == vm_id
    assert result["state"] == "running"
    assert qemus(str(base)) == [result["pid"]]


@pytest.mark.parametrize("case", ["bad-args", "no-host", "no-disk", "corrupt"])
def test_start_after_create_never_raises(node: Node, base: Path, case: str) -> None:
    vm_id = str(uuid.uuid4())
    args = power_args(vm_id)
    host: VmHost | None = node.host
    if case == "bad-args":
        args["restart_policy"] = "sometimes"
    elif case == "no-host":
        node.disk(vm_id)
        host = None
    elif case == "corrupt":
        disk = node.root / "vms" / vm_id / "disk.qcow2"
        disk.parent.mkdir(parents=True)
        disk.write_bytes(os.urandom(64 * 1024))
    result = vmpower.start_after_create(node.pools, host, args)
    assert result["id"] == vm_id
    assert result["state"] == "failed"
    assert isinstance(result["detail"], str)
    assert result["detail"]
    assert set(result) == {"id", "state", "detail"}
    assert qemus(str(base)) == []


# -- a stop while a restart is pending ------------------------------------------------


class Tick:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("verb", [vmpower.VM_STOP, vmpower.VM_POWEROFF])
def test_a_stop_of_a_crashed_vm_cancels_its_pending_restart(
    node: Node, base: Path, verb: str
) -> None:
    clock = Tick()
    sup = VmSupervisor(node.runtime, monotonic=clock)
    host = VmHost(sup, accel="tcg", qemu_binary="qemu-system-x86_64")
    vm_id = str(uuid.uuid4())
    node.disk(vm_id)
    args = vmpower.PowerArgs.parse(power_args(vm_id))
    pid = vmpower.run(node.pools, host, vmpower.VM_START, args)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not node.runtime.alive(vm_id))
    sup.tick()
    [crashed] = sup.observations()
    assert crashed.next_restart_at is not None  # the on-failure policy will restart it
    stopped = vmpower.run(node.pools, host, verb, args)
    assert stopped["next_restart_at"] is None  # the operator asked for it to stay down
    clock.now += 3600
    sup.tick()
    assert qemus(str(base)) == []
    assert sup.observations()[0].state in ("stopped", "crashed")

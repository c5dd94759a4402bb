"""Per-VM cgroups against this machine's real cgroup hierarchy: detection, a real QEMU
started by the runtime in its group with its limits (read back from the control files),
the group gone when the VM ends, failures to place reported, and a node without
writable cgroups running the VM without limits and saying why.

Tests that need a writable hierarchy skip when ``/sys/fs/cgroup`` has none (they need
root). Each test uses a parent group of its own (``otherix-test-<random>``), removed
after it: ``support`` comes before ``runtime`` in the arguments, so it is torn down
after the runtime fixture has killed and reaped the test's QEMUs.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from vmshelpers import wait_for

from otherix.agent.vms import cgroups, record

MiB = 1024 * 1024


def _writable() -> str | None:
    """Why the machine's hierarchy is not usable here, or None."""
    found = cgroups.detect(parent="otherix-probe")
    if found.mode == "none":
        return found.reason
    for group in {found.memory_parent, found.cpu_parent}:
        assert group is not None
        group.rmdir()
    return None


_WHY_NOT = _writable()
needs_cgroups = pytest.mark.skipif(
    _WHY_NOT is not None, reason=f"no writable cgroup hierarchy: {_WHY_NOT}"
)


@pytest.fixture
def support() -> Iterator[cgroups.CgroupSupport]:
    found = cgroups.detect(parent=f"otherix-test-{secrets.token_hex(4)}")
    assert found.mode != "none", found.reason
    yield found
    for group in {found.memory_parent, found.cpu_parent}:
        assert group is not None
        for child in group.iterdir():
            if child.is_dir():
                child.rmdir()
        group.rmdir()


def _groups(support: cgroups.CgroupSupport, vm_id: str) -> tuple[Path, Path]:
    assert support.memory_parent is not None
    assert support.cpu_parent is not None
    return support.memory_parent / vm_id, support.cpu_parent / vm_id


def _pids(group: Path) -> set[int]:
    return {int(line) for line in (group / "cgroup.procs").read_text().split()}


def _limits(support: cgroups.CgroupSupport, vm_id: str) -> tuple[int, str]:
    """(memory limit in bytes, "quota period") as the kernel has them."""
    mem, cpu = _groups(support, vm_id)
    if support.mode == "v2":
        return int((mem / "memory.max").read_text()), (cpu / "cpu.max").read_text().strip()
    quota = (cpu / "cpu.cfs_quota_us").read_text().strip()
    period = (cpu / "cpu.cfs_period_us").read_text().strip()
    return int((mem / "memory.limit_in_bytes").read_text()), f"{quota} {period}"


@needs_cgroups
def test_detect_finds_the_machines_hierarchy_and_makes_the_parents(support) -> None:
    assert support.mode in ("v1", "v2")
    assert support.reason is None
    mem, cpu = support.memory_parent, support.cpu_parent
    assert mem is not None
    assert cpu is not None
    assert mem.is_dir()
    assert cpu.is_dir()
    assert (mem / "cgroup.procs").is_file()
    assert (cpu / "cgroup.procs").is_file()


def test_a_directory_that_is_not_a_cgroup_fs_is_none_with_the_reason(tmp_path) -> None:
    (tmp_path / "memory").mkdir()  # a directory, not a hierarchy: no control files
    found = cgroups.detect(tmp_path)
    assert found.mode == "none"
    assert found.reason == f"no cgroup v2 with memory and cpu, no v1 {tmp_path / 'memory'}"
    assert found.memory_parent is None
    assert not (tmp_path / "memory" / "otherix").exists()
    placed = found.place(os.getpid(), "vm1", 64, 1)
    assert placed == cgroups.Placement(f"none: {found.reason}", False)
    assert found.remove("vm1") is None


@needs_cgroups
def test_qemu_runs_in_its_group_with_the_limits_and_the_group_goes_with_it(
    support, runtime, launch, blank_disk
) -> None:
    rt = runtime(limits=support)
    seen = rt.start(launch(blank_disk, memory_mb=64))
    assert seen.state == "running"
    assert seen.limits == f"cgroup {support.mode}: memory 64 MiB (+256 MiB for QEMU), cpu 1"
    mem, cpu = _groups(support, "vm1")
    assert seen.pid in _pids(mem)
    assert seen.pid in _pids(cpu)
    assert _limits(support, "vm1") == ((64 + cgroups.QEMU_OVERHEAD_MB) * MiB, "100000 100000")
    own = Path(f"/proc/{seen.pid}/cgroup").read_text()
    assert f"/{support.memory_parent.name}/vm1\n" in own
    # what QEMU has used so far is charged to its group
    if support.mode == "v1":
        assert int((mem / "memory.usage_in_bytes").read_text()) > 0
    off = rt.poweroff("vm1")
    assert off.state == "stopped"
    assert off.limits == seen.limits  # what it ran under, still reported
    assert not mem.exists()
    assert not cpu.exists()


@needs_cgroups
def test_a_crashed_qemus_group_is_removed_when_the_crash_is_observed(
    support, runtime, launch, blank_disk
) -> None:
    rt = runtime(limits=support)
    seen = rt.start(launch(blank_disk))
    mem, cpu = _groups(support, "vm1")
    assert mem.is_dir()
    os.kill(seen.pid, signal.SIGKILL)
    wait_for(lambda: rt.state("vm1").state == "crashed")
    assert not mem.exists()
    assert not cpu.exists()


@needs_cgroups
def test_a_restarted_agent_reports_the_limits_and_cleans_up(
    support, runtime, launch, blank_disk
) -> None:
    first = runtime(limits=support)
    seen = first.start(launch(blank_disk))
    again = runtime(limits=support)
    (attached,) = again.attach_all()
    assert attached.state == "running"
    assert attached.limits == seen.limits
    again.poweroff("vm1")
    assert not _groups(support, "vm1")[0].exists()


@needs_cgroups
def test_a_pid_that_cannot_be_moved_is_reported_and_leaves_no_group(support, caplog) -> None:
    proc = subprocess.Popen(["true"])  # a pid that is gone once reaped
    proc.wait()
    placed = support.place(proc.pid, "vm1", 64, 1)
    assert not placed.placed
    assert placed.limits.startswith(f"none: cannot place QEMU (pid {proc.pid}) in its cgroup: ")
    assert "No such process" in placed.limits
    assert "cannot place QEMU" in caplog.text
    mem, cpu = _groups(support, "vm1")
    assert not mem.exists()
    assert not cpu.exists()


@needs_cgroups
def test_a_group_with_a_process_left_is_not_removed_and_says_so(support) -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        assert support.place(proc.pid, "vm1", 64, 2).placed
        _, cpu = _groups(support, "vm1")
        assert (cpu / ("cpu.max" if support.mode == "v2" else "cpu.cfs_quota_us")).exists()
        left = support.remove("vm1", timeout=0.2)
        assert left is not None
        assert left.startswith("cannot remove cgroup ")
        assert "Device or resource busy" in left
        assert _limits(support, "vm1")[1] == "200000 100000"
    finally:
        proc.kill()
        proc.wait()
    assert support.remove("vm1") is None
    assert not _groups(support, "vm1")[0].exists()


def test_without_cgroups_the_vm_runs_without_limits_and_says_why(
    runtime, launch, blank_disk, tmp_path
) -> None:
    none = cgroups.detect(tmp_path)
    rt = runtime(limits=none)
    seen = rt.start(launch(blank_disk))
    assert seen.state == "running"
    assert seen.limits == f"none: {none.reason}"
    assert rt.poweroff("vm1").state == "stopped"


@needs_cgroups
def test_a_state_file_from_before_limits_reads_as_no_limits_known(
    support, runtime, launch, blank_disk, base
) -> None:
    rt = runtime(limits=support)
    rt.start(launch(blank_disk))
    state_file = base / "run" / "vm1" / "state.json"
    doc = json.loads(state_file.read_bytes())
    assert doc["limits"].startswith(f"cgroup {support.mode}: ")
    del doc["limits"]
    state_file.write_text(json.dumps(doc))
    rec = record.load(state_file)
    assert rec is not None
    assert rec.limits is None
    (attached,) = runtime(limits=support).attach_all()
    assert attached.state == "running"
    assert attached.limits is None

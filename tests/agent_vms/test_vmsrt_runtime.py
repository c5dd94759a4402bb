"""The VM runtime against real QEMU processes (TCG): start, observe, stop, power off,
the faults (a corrupt disk, too much memory, a disk in use, kill -9) and two starts at
once."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from vmshelpers import qemus, wait_for

from otherix.agent.vms import UnknownVm
from otherix.agent.vms.process import identity_of


def test_start_runs_qemu_with_the_launch_then_poweroff_stops_it(runtime, launch, blank_disk):
    rt = runtime()
    seen = rt.start(launch(blank_disk))
    assert seen.state == "running"
    assert seen.accel == "tcg"
    assert seen.pid is not None
    cmdline = Path(f"/proc/{seen.pid}/cmdline").read_bytes().split(b"\0")
    assert b"-m" in cmdline
    assert cmdline[cmdline.index(b"-m") + 1] == b"64"
    assert str(blank_disk).encode() in b" ".join(cmdline)
    assert seen.uptime_s is not None
    assert seen.uptime_s >= 0
    off = rt.poweroff("vm1")
    assert off.state == "stopped"
    assert off.pid is None
    assert identity_of(seen.pid) is None


def test_stop_falls_back_to_power_off_when_the_guest_ignores_acpi(runtime, launch, blank_disk):
    rt = runtime()
    rt.start(launch(blank_disk))
    began = time.monotonic()
    seen = rt.stop("vm1", timeout=1.0)
    took = time.monotonic() - began
    assert seen.state == "stopped"
    assert 1.0 <= took < 8.0


def test_kill_9_of_qemu_is_crashed_with_the_exit_status_and_console(runtime, launch, boot_disk):
    rt = runtime()
    seen = rt.start(launch(boot_disk, disk_format="raw"))
    log = launch(boot_disk).console_log
    wait_for(lambda: log.exists() and b"LONG-MODE-OK" in log.read_bytes())
    os.kill(seen.pid, signal.SIGKILL)
    wait_for(lambda: rt.state("vm1").state != "running")
    crashed = rt.state("vm1")
    assert crashed.state == "crashed"
    assert crashed.exit_status == -9
    assert crashed.detail == "killed by SIGKILL"
    assert crashed.console == ("OTHERIX-LONG-MODE-OK",)


def test_a_corrupt_disk_is_failed_with_qemus_own_message(runtime, launch, base):
    disk = base / "corrupt.qcow2"
    disk.write_bytes(b"QFI\xfbgarbage" * 100)
    seen = runtime().start(launch(disk))
    assert seen.state == "failed"
    assert seen.detail is not None
    assert seen.detail.startswith("qemu-system-x86_64: -blockdev "), seen.detail
    assert "Unsupported qcow2 version" in seen.detail


def test_memory_the_node_does_not_have_is_failed_not_a_hang(runtime, launch, blank_disk):
    began = time.monotonic()
    seen = runtime().start(launch(blank_disk, memory_mb=64 * 1024 * 1024 * 1024))
    assert seen.state == "failed"
    assert seen.detail is not None
    assert seen.detail.startswith("qemu-system-x86_64:"), seen.detail
    assert "memory" in seen.detail
    assert time.monotonic() - began < 15


def test_a_second_qemu_on_a_disk_in_use_fails_on_qemus_image_lock(runtime, launch, blank_disk):
    rt = runtime()
    assert rt.start(launch(blank_disk, "vm1")).state == "running"
    other = rt.start(launch(blank_disk, "vm2"))
    assert other.state == "failed"
    assert other.detail is not None
    assert 'Failed to get "write" lock' in other.detail
    assert rt.state("vm1").state == "running"


def test_two_starts_at_once_make_one_qemu(runtime, launch, blank_disk, base):
    rt = runtime()
    results = []
    go = threading.Barrier(2)

    def start():
        go.wait()
        results.append(rt.start(launch(blank_disk)))

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.state for r in results] == ["running", "running"]
    assert results[0].pid == results[1].pid
    assert qemus(str(base)) == [results[0].pid]


def test_two_runtimes_on_one_run_dir_start_one_qemu(runtime, launch, blank_disk, base):
    first, second = runtime(), runtime()
    a = first.start(launch(blank_disk))
    b = second.start(launch(blank_disk))
    assert b.state == "running"
    assert a.pid == b.pid
    assert qemus(str(base)) == [a.pid]


def test_restart_runs_a_new_qemu_from_the_same_launch(runtime, launch, blank_disk):
    rt = runtime()
    first = rt.start(launch(blank_disk))
    again = rt.restart("vm1", timeout=0.5)
    assert again.state == "running"
    assert again.pid != first.pid


def test_state_of_a_vm_never_seen_is_unknown(runtime):
    with pytest.raises(UnknownVm):
        runtime().state("nope")

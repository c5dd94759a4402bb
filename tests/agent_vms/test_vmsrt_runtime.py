"""The VM runtime against real QEMU processes (TCG): start, observe, stop, power off,
the faults (a corrupt disk, too much memory, a disk in use, kill -9) and two starts at
once."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from vmshelpers import processes_naming, qemus, wait_for

from otherix.agent.vms import UnknownVm, qmp
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
    wait_for(lambda: log.exists() and b"LONG-MODE-OK" in log.read_bytes(), timeout=30)
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


def test_a_qemu_that_exits_0_unasked_is_stopped_as_after_a_guest_poweroff(
    runtime, launch, blank_disk, base
):
    rt = runtime()
    rt.start(launch(blank_disk))
    qmp.execute(base / "run" / "vm1" / "qmp.sock", "quit")  # exits 0, as on a guest poweroff
    wait_for(lambda: rt.state("vm1").state != "running")
    seen = rt.state("vm1")
    assert seen.state == "stopped"
    assert seen.exit_status == 0


def test_a_stop_in_progress_is_observed_as_stopping(runtime, launch, blank_disk):
    rt = runtime()
    rt.start(launch(blank_disk))
    stopper = threading.Thread(target=rt.stop, args=("vm1", 2.0))
    stopper.start()
    try:
        wait_for(lambda: rt.state("vm1").state == "stopping", timeout=1.5)
    finally:
        stopper.join()
    assert rt.state("vm1").state == "stopped"


def test_stop_and_poweroff_of_a_vm_that_is_not_running_change_nothing(runtime, launch, blank_disk):
    rt = runtime()
    rt.start(launch(blank_disk))
    rt.poweroff("vm1")
    assert rt.stop("vm1", timeout=0.1).state == "stopped"
    assert rt.poweroff("vm1").state == "stopped"
    with pytest.raises(UnknownVm):
        rt.stop("other")


def test_a_failed_vm_starts_again_once_its_disk_is_fixed(runtime, launch, base):
    disk = base / "later.qcow2"
    disk.write_bytes(b"not yet")
    rt = runtime()
    assert rt.start(launch(disk)).state == "failed"
    disk.unlink()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    assert rt.start(launch(disk)).state == "running"


def test_the_console_of_a_running_vm_is_rotated_at_the_cap(runtime, launch, boot_disk):
    rt = runtime(console_cap=8)
    rt.start(launch(boot_disk, disk_format="raw"))  # observing may rotate already
    log = launch(boot_disk).console_log
    old = log.with_name("console.log.1")

    def written() -> bytes:
        return b"".join(p.read_bytes() for p in (old, log) if p.exists())

    wait_for(lambda: written().endswith(b"LONG-MODE-OK\r\n"[-8:]), timeout=30)
    seen = rt.state("vm1")
    assert seen.state == "running"
    # whenever the rotations happened, neither file holds more than the cap, and the
    # newest bytes survive in them
    assert log.stat().st_size <= 8
    assert old.stat().st_size <= 8
    assert written().endswith(b"ODE-OK\r\n")
    assert seen.console[-1].endswith("ODE-OK")


def test_a_qemu_that_never_answers_qmp_is_killed_and_failed_after_the_start_timeout(
    runtime, launch, blank_disk, base
):
    # a real process in QEMU's place that says something and then hangs without QMP
    hang = base / "hanging-qemu"
    hang.write_text("#!/bin/sh\necho 'stuck in firmware' >&2\nexec sleep 60\n")
    hang.chmod(0o755)
    rt = runtime(start_timeout=0.5)
    began = time.monotonic()
    seen = rt.start(replace(launch(blank_disk), qemu_binary=str(hang)))
    assert time.monotonic() - began < 5
    assert seen.state == "failed"
    assert seen.detail == "QEMU did not answer QMP within 0.5 s: stuck in firmware"
    assert seen.exit_status == -9
    assert qemus(str(base)) == []
    assert processes_naming(str(hang)) == []


def test_a_qemu_binary_that_cannot_be_run_is_failed(runtime, launch, blank_disk, base):
    missing = str(base / "no-such-qemu")
    rt = runtime()
    seen = rt.start(replace(launch(blank_disk), qemu_binary=missing))
    assert seen.state == "failed"
    assert seen.detail == f"cannot run {missing}: No such file or directory"
    assert runtime().attach_all()[0].state == "failed"  # and so it is recorded


def test_a_start_after_another_agent_started_the_vm_starts_no_second_qemu(
    runtime, launch, blank_disk, base
):
    first, second = runtime(), runtime()
    first.start(launch(blank_disk))
    first.poweroff("vm1")
    again = second.start(launch(blank_disk))
    assert again.state == "running"
    # the first runtime last saw the VM stopped; the state file says otherwise
    assert first.start(launch(blank_disk)).pid == again.pid
    assert qemus(str(base)) == [again.pid]


def test_poweroff_of_a_qemu_that_does_not_answer_qmp_kills_it(runtime, launch, blank_disk):
    rt = runtime(qmp_timeout=0.5)
    seen = rt.start(launch(blank_disk))
    os.kill(seen.pid, signal.SIGSTOP)  # wedged: QMP is not served
    began = time.monotonic()
    off = rt.stop("vm1", timeout=0.5)
    assert off.state == "stopped"
    assert off.exit_status == -signal.SIGKILL
    assert time.monotonic() - began < 5
    assert identity_of(seen.pid) is None

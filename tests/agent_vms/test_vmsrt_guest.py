"""The VM runtime with the real test guest (``support.guest``): the disk in a pool's
``vms/`` directory is the disk the VM runs from.

The guest's init counts its boots on its data partition and prints
``OTHERIX-GUEST-UP boot=N`` on the serial console; it powers off on ACPI. So a clean
``stop`` (ACPI, no fallback) ends QEMU with status 0, and after start, stop, start and
restart the counter read off the pool's disk file is the number of boots.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from vmshelpers import wait_for

from otherix.agent.vms import VmLaunch, VmRuntime
from support import guest

pytestmark = pytest.mark.slow  # four TCG boots of a real kernel


def _boots_seen(launch: VmLaunch) -> list[int]:
    if not launch.console_log.exists():
        return []
    text = launch.console_log.read_text(errors="replace")
    return [int(n) for n in guest.MARKER.findall(text)]


def _wait_boot(launch: VmLaunch, n: int) -> float:
    began = time.monotonic()
    wait_for(lambda: n in _boots_seen(launch), timeout=60)
    return time.monotonic() - began


def test_the_guest_runs_from_the_pool_disk_across_stop_start_and_restart(
    runtime, launch, base: Path, test_guest: Path
) -> None:
    pool_disk = base / "pool" / "vms" / "vm1" / "disk.qcow2"
    pool_disk.parent.mkdir(parents=True)
    shutil.copyfile(test_guest, pool_disk)
    rt: VmRuntime = runtime()
    vm = launch(pool_disk, memory_mb=256)

    assert rt.start(vm).state == "running"
    _wait_boot(vm, 1)
    stopped = rt.stop("vm1", timeout=30)  # the guest powers off on ACPI: no fallback
    assert stopped.state == "stopped"
    assert stopped.exit_status == 0
    assert guest.read_counter(pool_disk) == 1

    assert rt.start(vm).state == "running"
    _wait_boot(vm, 2)
    restarted = rt.restart("vm1", timeout=30)
    assert restarted.state == "running"
    _wait_boot(vm, 3)
    assert rt.stop("vm1", timeout=30).state == "stopped"
    assert guest.read_counter(pool_disk) == 3
    assert guest.read_counter(test_guest) is None  # the cached image was never booted

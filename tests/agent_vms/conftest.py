"""Fixtures for the VM runtime tests: short run directories, real disks, runtimes that
clean up every QEMU they started.

A QMP socket path must fit in 107 bytes, so each test gets a short directory under
``/tmp`` (``base``) rather than pytest's long ``tmp_path``. ``runtime()`` builds a
``VmRuntime`` on ``base/run`` (call it again for "a restarted agent" on the same run
directory); at teardown every process whose command line names ``base`` is killed and
each runtime observes its VMs once more, so the QEMUs it started are reaped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from vmshelpers import processes_naming

from otherix.agent.vms import VmLaunch, VmRuntime
from otherix.agent.vms.accel import BOOT_SECTOR
from otherix.agent.vms.command import DiskFormat


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ovm-", dir="/tmp"))
    try:
        yield path
    finally:
        for pid in processes_naming(str(path)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while processes_naming(str(path)) and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def runtime(base) -> Iterator[Callable[..., VmRuntime]]:
    made: list[VmRuntime] = []

    def make(**kwargs: float) -> VmRuntime:
        kwargs.setdefault("start_timeout", 20.0)
        rt = VmRuntime(base / "run", **kwargs)  # type: ignore[arg-type]
        made.append(rt)
        return rt

    yield make
    for pid in processes_naming(str(base)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for rt in made:
        for vm_id in rt.vm_ids():
            deadline = time.monotonic() + 5
            while rt.state(vm_id).state in ("running", "starting", "stopping"):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)


@pytest.fixture
def blank_disk(base) -> Path:
    """A blank 64 MiB qcow2: QEMU sits in the BIOS forever (no bootable disk)."""
    disk = base / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    return disk


@pytest.fixture
def boot_disk(base) -> Path:
    """A raw disk whose boot sector prints one line on the serial port, then halts
    (ignoring ACPI): the accel probe's guest."""
    disk = base / "boot.raw"
    disk.write_bytes(BOOT_SECTOR.ljust(1024 * 1024, b"\0"))
    return disk


@pytest.fixture
def launch(base) -> Callable[..., VmLaunch]:
    def make(
        disk: Path, vm_id: str = "vm1", disk_format: DiskFormat = "qcow2", memory_mb: int = 64
    ) -> VmLaunch:
        return VmLaunch(
            vm_id=vm_id,
            name=f"name-{vm_id}",
            disk_path=disk,
            disk_format=disk_format,
            vcpus=1,
            memory_mb=memory_mb,
            accel="tcg",
            vm_dir=base / "pool" / vm_id,
        )

    return make

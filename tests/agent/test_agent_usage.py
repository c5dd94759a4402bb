"""What a pool's directories hold (otherix.agent.usage) and how PoolState reports it:
real files on a real directory (sparse and dense disks, a qcow2 header, the
cache, scratch, symlinks), the measuring interval and the forced re-measures."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from otherix.agent import fs
from otherix.agent.fs import ProtectedRoots
from otherix.agent.pools import PoolReconciler
from otherix.agent.report import PoolState, settle
from otherix.agent.usage import Usage, measure
from otherix.models.heartbeat import DeclaredPool, PoolReport, PoolUsage

MiB = 1 << 20
GiB = 1 << 30


def allocated(path: Path) -> int:
    return os.lstat(path).st_blocks * 512


def write_dense(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x01" * size)
    return path


def write_sparse(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(size)
    return path


def write_qcow2_header(path: Path, virtual: int) -> Path:
    """The first bytes of a qcow2 v3 image (enough for the header's size field)."""
    head = b"QFI\xfb" + struct.pack(">IQIIQ", 3, 0, 0, 16, virtual)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head.ljust(4096, b"\x00"))
    return path


def test_vm_disks_count_allocated_bytes_and_virtual_size(tmp_path: Path) -> None:
    dense = write_dense(tmp_path / "vms" / "vm-a" / "disk.raw", 2 * MiB)
    sparse = write_sparse(tmp_path / "vms" / "vm-b" / "disk.raw", 5 * GiB)
    qcow = write_qcow2_header(tmp_path / "vms" / "vm-c" / "disk.qcow2", 20 * GiB)
    write_dense(tmp_path / "vms" / "vm-a" / "console.log", MiB)  # not a disk

    usage = measure(tmp_path)

    assert allocated(dense) >= 2 * MiB
    assert allocated(sparse) < MiB  # the filesystem holds the hole as a hole
    assert usage.vm_disk_bytes == allocated(dense) + allocated(sparse) + allocated(qcow)
    assert usage.vm_provisioned_bytes == 2 * MiB + 5 * GiB + 20 * GiB
    assert usage.image_cache_bytes == 0
    assert usage.scratch_bytes == 0


def test_cache_and_scratch_count_every_regular_file_below_them(tmp_path: Path) -> None:
    image = write_dense(tmp_path / "images" / "debian.qcow2", 3 * MiB)
    sidecar = write_dense(tmp_path / "images" / "debian.qcow2.sha256", 64)
    part = write_dense(tmp_path / "scratch" / "dl-1" / "part", MiB)
    hole = write_sparse(tmp_path / "scratch" / "clone.tmp", GiB)

    usage = measure(tmp_path)

    assert usage.image_cache_bytes == allocated(image) + allocated(sidecar)
    assert usage.scratch_bytes == allocated(part) + allocated(hole)
    assert usage.vm_disk_bytes == 0


def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    outside = write_dense(tmp_path / "outside" / "big", 4 * MiB)
    pool = tmp_path / "pool"
    (pool / "vms" / "vm-a").mkdir(parents=True)
    (pool / "vms" / "vm-a" / "disk.raw").symlink_to(outside)
    (pool / "vms" / "vm-b").symlink_to(outside.parent, target_is_directory=True)
    (pool / "images").mkdir()
    (pool / "images" / "linked").symlink_to(outside.parent, target_is_directory=True)
    (pool / "images" / "file-link").symlink_to(outside)

    assert measure(pool) == Usage()


def test_a_subdirectory_counts_only_when_it_lies_inside_the_pool(tmp_path: Path) -> None:
    """As the reconciler allows: ``images/`` may be a symlink within the pool, never out."""
    pool = tmp_path / "pool"
    inside = write_dense(pool / "cache-dir" / "img", MiB)
    (pool / "images").symlink_to(pool / "cache-dir", target_is_directory=True)
    outside = write_dense(tmp_path / "elsewhere" / "part", MiB)
    (pool / "scratch").symlink_to(outside.parent, target_is_directory=True)
    usage = measure(pool)
    assert usage.image_cache_bytes == allocated(inside)
    assert usage.scratch_bytes == 0
    # the pool root itself reached through a symlink (as declared) is measured
    (tmp_path / "alias").symlink_to(pool, target_is_directory=True)
    assert measure(tmp_path / "alias") == usage


def test_a_pool_without_its_directories_measures_zero(tmp_path: Path) -> None:
    assert measure(tmp_path / "nothing-here") == Usage()
    assert measure(tmp_path) == Usage()


def test_a_qcow2_named_disk_that_is_not_qcow2_counts_its_file_size(tmp_path: Path) -> None:
    write_dense(tmp_path / "vms" / "vm-a" / "disk.qcow2", 8192)
    assert measure(tmp_path).vm_provisioned_bytes == 8192


# PoolState -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def still_filesystem(monkeypatch):
    """The filesystem's numbers as a quiet disk would give them: other work writing
    to the same /tmp must not move the capacity report these tests reason about."""
    monkeypatch.setattr(fs, "disk_usage", lambda _path: fs.Usage(100 * GiB, 50 * GiB))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state_for(tmp_path: Path, clock: FakeClock, interval: float = 60.0) -> PoolState:
    return PoolState(
        PoolReconciler(protected=ProtectedRoots()),
        allowed_prefixes=[f"{tmp_path}/"],
        usage_interval=interval,
        monotonic=clock,
    )


def declared(tmp_path: Path, name: str = "p") -> list[DeclaredPool]:
    return [DeclaredPool(name=name, type="local_dir", path=f"{tmp_path}/{name}")]


def test_a_ready_pool_reports_its_usage(tmp_path: Path) -> None:
    clock = FakeClock()
    state = state_for(tmp_path, clock)
    write_dense(tmp_path / "p" / "images" / "img.raw", MiB)
    state.reconcile(declared(tmp_path))
    (report,) = state.reports
    assert report.reconciliation_status == "ready"
    assert report.usage == PoolUsage(
        vm_disk_bytes=0,
        vm_provisioned_bytes=0,
        image_cache_bytes=allocated(tmp_path / "p" / "images" / "img.raw"),
        scratch_bytes=0,
    )


def test_usage_is_measured_at_most_every_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    state = state_for(tmp_path, clock, interval=60.0)
    pool = declared(tmp_path)
    state.reconcile(pool)
    first = state.reports[0].usage
    assert first is not None
    # 20 GiB provisioned in 4 KiB: far over the hysteresis, and the filesystem's
    # numbers do not move, so only the interval holds it back
    disk = write_qcow2_header(tmp_path / "p" / "vms" / "vm-1" / "disk.qcow2", 20 * GiB)
    clock.now += 59
    assert state.reconcile(pool) is False
    assert state.reports[0].usage == first
    clock.now += 1
    assert state.reconcile(pool) is True
    usage = state.reports[0].usage
    assert usage is not None
    assert usage.vm_provisioned_bytes == 20 * GiB
    assert usage.vm_disk_bytes == allocated(disk)


def test_small_usage_drift_is_not_reported_until_a_vm_task_refreshes(tmp_path: Path) -> None:
    clock = FakeClock()
    state = state_for(tmp_path, clock, interval=1.0)
    pool = declared(tmp_path)
    state.reconcile(pool)
    digest = state.digest
    disk = write_dense(tmp_path / "p" / "vms" / "vm-1" / "disk.raw", MiB)
    clock.now += 5
    assert state.reconcile(pool) is False  # measured, but under the hysteresis
    assert state.digest == digest
    assert state.refresh_images() is True  # a VM task ran: reported as measured
    usage = state.reports[0].usage
    assert usage is not None
    assert usage.vm_disk_bytes == allocated(disk)
    assert usage.vm_provisioned_bytes == MiB
    assert state.digest != digest
    clock.now += 5
    assert state.reconcile(pool) is False  # the next pass keeps it (no flapping back)
    assert state.reports[0].usage == usage


def test_a_scan_measures_usage_at_once(tmp_path: Path) -> None:
    clock = FakeClock()
    state = state_for(tmp_path, clock)
    state.reconcile(declared(tmp_path))
    image = write_dense(tmp_path / "p" / "images" / "img.raw", 2 * MiB)
    state.scan("p")
    usage = state.reports[0].usage
    assert usage is not None
    assert usage.image_cache_bytes == allocated(image)


def test_a_failed_pool_carries_no_usage(tmp_path: Path) -> None:
    state = state_for(tmp_path, FakeClock())
    outside = [DeclaredPool(name="x", type="local_dir", path="/elsewhere/x")]
    state.reconcile(outside)
    (report,) = state.reports
    assert report.reconciliation_status == "failed"
    assert report.usage is None


def _ready(usage: PoolUsage | None) -> PoolReport:
    return PoolReport(
        name="p",
        reconciliation_status="ready",
        capacity_bytes=100 * GiB,
        available_bytes=50 * GiB,
        usage=usage,
    )


def _parts(disk: int) -> PoolUsage:
    return PoolUsage(
        vm_disk_bytes=disk, vm_provisioned_bytes=10 * GiB, image_cache_bytes=0, scratch_bytes=0
    )


def test_settle_applies_the_capacity_hysteresis_to_usage() -> None:
    old = _ready(_parts(GiB))
    assert settle(old, _ready(_parts(GiB + 10 * MiB))) is old
    moved = _ready(_parts(GiB + 65 * MiB))
    assert settle(old, moved) is moved
    first = _ready(_parts(GiB))
    assert settle(_ready(None), first) is first

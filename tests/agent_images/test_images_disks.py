"""VM disks from cached images: clone, convert, resize, too small, redelivery, removal."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from typing import Any

import pytest

from otherix.agent.fs import ProtectedRoots
from otherix.agent.images import DiskResult, ImageError, KeyedLocks, ScratchArea
from otherix.agent.images import materialise_disk as materialise
from otherix.agent.images import remove_disk as remove

GiB = 1 << 30


def materialise_disk(*args: Any, **kwargs: Any) -> DiskResult:
    """The library call with a scratch area, locks and protected roots of its own
    (the agent passes its cache's)."""
    protected = ProtectedRoots()
    return materialise(
        *args,
        scratch_area=ScratchArea(protected),
        locks=KeyedLocks(),
        protected=protected,
        **kwargs,
    )


def remove_disk(pool_root: Any, vm_id: str) -> bool:
    """The library call with locks and protected roots of its own (no other pool)."""
    return remove(pool_root, vm_id, locks=KeyedLocks(), protected=ProtectedRoots())


def qemu_info(path) -> dict[str, Any]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True
    )
    info: dict[str, Any] = json.loads(out.stdout)
    return info


@pytest.fixture
def vm() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def cached_qcow2(cache, origin, pool, qcow2):
    return cache.ensure_image(pool, origin.serve("/base.qcow2", qcow2))


@pytest.fixture
def cached_raw(cache, origin, pool):
    return cache.ensure_image(pool, origin.serve("/base.raw", os.urandom(2 << 20)))


def nothing_left(pool, vm) -> bool:
    return not (pool / "vms" / vm).exists() and os.listdir(pool / "scratch") == []


def test_qcow2_disk_at_image_size(pool, vm, cached_qcow2):
    calls = []
    disk = materialise_disk(
        pool, vm, cached_qcow2.path, "qcow2", 0, progress=lambda d, t: calls.append((d, t))
    )
    assert disk.path == pool / "vms" / vm / "disk.qcow2"
    assert disk.format == "qcow2"
    assert disk.virtual_size_bytes == 16 << 20
    assert disk.method in ("reflink", "copy")
    assert disk.disk_size_bytes > 0
    assert disk.path.read_bytes() == cached_qcow2.path.read_bytes()
    assert os.stat(disk.path).st_ino != os.stat(cached_qcow2.path).st_ino
    assert disk.path.stat().st_mode & 0o777 == 0o600
    info = qemu_info(disk.path)
    assert "backing-filename" not in info  # never an overlay on the cache
    assert calls[-1] == (cached_qcow2.size_bytes, cached_qcow2.size_bytes)
    assert os.listdir(pool / "scratch") == []


def test_qcow2_disk_resized(pool, vm, cached_qcow2):
    disk = materialise_disk(pool, vm, cached_qcow2.path, "qcow2", 2)
    assert disk.virtual_size_bytes == 2 * GiB
    assert qemu_info(disk.path)["virtual-size"] == 2 * GiB
    # The cached image is untouched.
    assert qemu_info(cached_qcow2.path)["virtual-size"] == 16 << 20


def test_disk_too_small_leaves_nothing(cache, origin, pool, vm, make_qcow2):
    big = cache.ensure_image(pool, origin.serve("/big.qcow2", make_qcow2("3G")))
    with pytest.raises(ImageError) as err:
        materialise_disk(pool, vm, big.path, "qcow2", 2)
    assert err.value.code == "disk_too_small"
    assert not err.value.retryable
    assert str(3 * GiB) in err.value.message
    assert nothing_left(pool, vm)
    assert materialise_disk(pool, vm, big.path, "qcow2", 3).virtual_size_bytes == 3 * GiB


def test_raw_disk_from_raw_image(pool, vm, cached_raw):
    disk = materialise_disk(pool, vm, cached_raw.path, "raw", 1)
    assert disk.path == pool / "vms" / vm / "disk.raw"
    assert disk.virtual_size_bytes == GiB
    assert os.stat(disk.path).st_size == GiB
    with open(disk.path, "rb") as f:
        assert f.read(2 << 20) == cached_raw.path.read_bytes()
    assert disk.disk_size_bytes < 64 << 20  # the grown tail is a hole


def test_raw_image_requested_as_qcow2_is_converted(pool, vm, cached_raw):
    calls = []
    disk = materialise_disk(
        pool, vm, cached_raw.path, "qcow2", 1, progress=lambda d, t: calls.append((d, t))
    )
    assert (disk.format, disk.method, disk.virtual_size_bytes) == ("qcow2", "convert", GiB)
    assert qemu_info(disk.path)["format"] == "qcow2"
    assert calls[-1] == (2 << 20, 2 << 20)
    out = pool / "check.raw"
    subprocess.run(
        ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(disk.path), str(out)], check=True
    )
    with open(out, "rb") as f:
        assert f.read(2 << 20) == cached_raw.path.read_bytes()


def test_qcow2_image_requested_as_raw_is_converted(pool, vm, cached_qcow2):
    disk = materialise_disk(pool, vm, cached_qcow2.path, "raw", 0)
    assert (disk.path.name, disk.method, disk.virtual_size_bytes) == (
        "disk.raw",
        "convert",
        16 << 20,
    )
    assert os.stat(disk.path).st_size == 16 << 20


def test_redelivery_returns_the_existing_disk(pool, vm, cached_qcow2):
    first = materialise_disk(pool, vm, cached_qcow2.path, "qcow2", 1)
    mtime = os.stat(first.path).st_mtime_ns
    again = materialise_disk(pool, vm.upper(), cached_qcow2.path, "qcow2", 5)
    assert again.method == "existing"
    assert (again.path, again.virtual_size_bytes) == (first.path, GiB)  # not resized
    assert os.stat(first.path).st_mtime_ns == mtime
    # Even with the image gone from the cache.
    cached_qcow2.path.unlink()
    assert materialise_disk(pool, vm, cached_qcow2.path, "raw", 0).path == first.path


def test_remove_disk_is_idempotent(pool, vm, cached_qcow2):
    materialise_disk(pool, vm, cached_qcow2.path, "qcow2", 0)
    assert remove_disk(pool, vm) is True
    assert not (pool / "vms" / vm).exists()
    assert remove_disk(pool, vm) is False
    assert cached_qcow2.path.exists()  # the cache is independent of disks


def test_disk_never_depends_on_the_cache(pool, vm, cached_qcow2):
    disk = materialise_disk(pool, vm, cached_qcow2.path, "qcow2", 1)
    cached_qcow2.path.unlink()
    assert qemu_info(disk.path)["virtual-size"] == GiB
    subprocess.run(["qemu-img", "check", "-q", str(disk.path)], check=True)


@pytest.mark.security
@pytest.mark.parametrize("bad", ["not-a-uuid", "../etc", ""])
def test_vm_id_must_be_a_uuid(pool, cached_qcow2, bad):
    with pytest.raises(ValueError, match="UUID"):
        materialise_disk(pool, bad, cached_qcow2.path, "qcow2", 0)
    with pytest.raises(ValueError, match="UUID"):
        remove_disk(pool, bad)


def test_bad_format_and_size(pool, vm, cached_qcow2):
    with pytest.raises(ImageError) as err:
        materialise_disk(pool, vm, cached_qcow2.path, "vmdk", 0)
    assert err.value.code == "unsupported_format"
    with pytest.raises(ValueError, match="disk_gib"):
        materialise_disk(pool, vm, cached_qcow2.path, "qcow2", -1)


@pytest.mark.security
def test_image_must_come_from_the_pools_cache(pool, vm, tmp_path):
    elsewhere = tmp_path / "elsewhere.img"
    elsewhere.write_bytes(b"x" * 4096)
    with pytest.raises(ImageError) as err:
        materialise_disk(pool, vm, elsewhere, "raw", 0)
    assert err.value.code == "image_unavailable"
    with pytest.raises(ImageError) as err:
        materialise_disk(pool, vm, pool / "images" / "missing.img", "raw", 0)
    assert err.value.code == "image_unavailable"
    assert nothing_left(pool, vm)


@pytest.mark.security
def test_qcow2_with_a_backing_file_is_refused(pool, vm, tmp_path):
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    overlay = pool / "images" / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(overlay)],
        check=True,
    )
    with pytest.raises(ImageError) as err:
        materialise_disk(pool, vm, overlay, "qcow2", 0)
    assert err.value.code == "unsupported_format"
    assert "backing file" in err.value.message
    assert nothing_left(pool, vm)

"""Tests on real mounts (root only): a full pool (8 MiB tmpfs) and a reflink
clone on a loop-mounted XFS. Each mount is unmounted in teardown."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from otherix.agent import fs
from otherix.agent.images import ImageError, materialise_disk

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount")


def _mount(args: list[str], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", *args, str(target)], capture_output=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount: {proc.stderr.decode().strip()}")


@pytest.fixture
def small_pool(tmp_path, make_pool):
    """A pool on an 8 MiB tmpfs."""
    mnt = tmp_path / "tmpfs"
    _mount(["-t", "tmpfs", "-o", "size=8M", "tmpfs"], mnt)
    try:
        yield make_pool(mnt / "pool")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def raw_disk(cache, pool: Path, vm: str, image: Path, **kw):
    """``materialise_disk`` of a raw ``image`` for ``vm`` with the cache's own scratch
    area, locks and protected roots, as the agent clones one."""
    return materialise_disk(
        pool,
        vm,
        image,
        "raw",
        0,
        scratch_area=cache.scratch,
        locks=cache.locks,
        protected=cache.protected,
        **kw,
    )


def nothing_partial(pool) -> bool:
    return os.listdir(pool / "images") == [] and os.listdir(pool / "scratch") == []


def test_pool_full_refused_before_download(make_cache, origin, small_pool):
    cache = make_cache(space_margin_bytes=1 << 20)
    url = origin.serve("/big.img", b"b" * (15 << 19))  # 7.5 MiB + 1 MiB margin > 8 MiB
    with pytest.raises(ImageError) as err:
        cache.ensure_image(small_pool, url)
    assert err.value.code == "pool_full"
    assert not err.value.retryable  # the agent does not retry it: seconds do not free space
    assert nothing_partial(small_pool)


def test_enospc_during_the_stream_is_pool_full(make_cache, origin, small_pool):
    cache = make_cache(space_margin_bytes=0)
    url = origin.serve("/big.img", b"b" * (12 << 20), content_length=False)  # size unknown
    with pytest.raises(ImageError) as err:
        cache.ensure_image(small_pool, url)
    assert err.value.code == "pool_full"
    assert nothing_partial(small_pool)
    assert fs.disk_usage(small_pool).available_bytes > 7 << 20  # the space is back


def test_room_for_a_small_image(make_cache, origin, small_pool):
    cache = make_cache(space_margin_bytes=1 << 20)
    img = cache.ensure_image(small_pool, origin.serve("/small.img", b"s" * (1 << 20)))
    assert img.size_bytes == 1 << 20


def test_disk_copy_on_a_full_pool(make_cache, origin, small_pool):
    cache = make_cache(space_margin_bytes=0)
    img = cache.ensure_image(small_pool, origin.serve("/half.img", os.urandom(5 << 20)))
    vm = str(uuid.uuid4())
    with pytest.raises(ImageError) as err:
        raw_disk(cache, small_pool, vm, img.path)
    assert err.value.code == "pool_full"
    assert not (small_pool / "vms" / vm).exists()
    assert os.listdir(small_pool / "scratch") == []


@pytest.fixture
def xfs_pool(tmp_path, make_pool):
    """A pool on a loop-mounted XFS with reflink (skipped without mkfs.xfs)."""
    if shutil.which("mkfs.xfs") is None:
        pytest.skip("mkfs.xfs not installed (xfsprogs)")
    image = tmp_path / "xfs.img"
    with open(image, "wb") as f:
        f.truncate(320 << 20)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    mnt = tmp_path / "xfs"
    _mount(["-o", "loop", str(image)], mnt)
    try:
        yield make_pool(mnt / "pool")
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_reflink_clone_on_xfs(make_cache, origin, xfs_pool):
    cache = make_cache(space_margin_bytes=0)
    img = cache.ensure_image(xfs_pool, origin.serve("/r.img", os.urandom(8 << 20)))
    vm = str(uuid.uuid4())
    disk = raw_disk(cache, xfs_pool, vm, img.path)
    assert disk.method == "reflink"
    assert disk.path.read_bytes() == img.path.read_bytes()
    # Writing to the disk does not change the cached image.
    with open(disk.path, "r+b") as f:
        f.write(b"\x00" * 4096)
    assert img.path.read_bytes()[:4096] != b"\x00" * 4096
    copy = raw_disk(cache, xfs_pool, str(uuid.uuid4()), img.path, allow_reflink=False)
    assert copy.method == "copy"

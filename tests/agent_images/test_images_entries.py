"""What counts as a cache entry, the inventory (``list_images``), damaged
entries being re-fetched, and the scratch sweep."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime

import pytest

from otherix.agent.fs import ProtectedRoots
from otherix.agent.images import ScratchArea, list_images


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(pool, name: str, data: bytes, sidecar: bytes | None) -> None:
    (pool / "images" / name).write_bytes(data)
    if sidecar is not None:
        (pool / "images" / f"{name}.sha256").write_bytes(sidecar)


def test_list_images_reports_valid_entries_only(cache, origin, pool, qcow2):
    cache.ensure_image(pool, origin.serve("/b.qcow2", qcow2))
    raw = os.urandom(4096)
    cache.ensure_image(pool, origin.serve("/a.raw", raw))
    # Legacy entry: valid sidecar with a trailing newline, no .source.
    put(pool, "c.img", b"legacy", sha(b"legacy").encode() + b"\n")
    # Not entries:
    put(pool, "no-sidecar.img", b"x", None)
    put(pool, "empty.img", b"", sha(b"").encode())
    put(pool, "upper.img", b"x", sha(b"x").upper().encode())
    put(pool, "short.img", b"x", b"abc")
    (pool / "images" / "dir.img").mkdir()
    (pool / "images" / "dir.img.sha256").write_text(sha(b"x"))
    (pool / "images" / "link.img").symlink_to(pool / "images" / "c.img")
    (pool / "images" / "link.img.sha256").write_text(sha(b"legacy"))
    (pool / "images" / "orphan.sha256").write_text(sha(b"x"))
    (pool / "scratch" / "d.img.0123.tmp").write_bytes(b"partial")

    images = list_images(pool)
    assert [i.name for i in images] == ["a.raw", "b.qcow2", "c.img"]
    a, b, c = images
    assert (a.sha256, a.size_bytes, a.format, a.virtual_size_bytes) == (
        sha(raw),
        4096,
        "raw",
        4096,
    )
    assert (b.sha256, b.size_bytes, b.format, b.virtual_size_bytes) == (
        sha(qcow2),
        len(qcow2),
        "qcow2",
        16 << 20,
    )
    assert (c.sha256, c.format, c.url) == (sha(b"legacy"), "raw", None)
    mtime = os.stat(pool / "images" / "b.qcow2").st_mtime
    assert b.imported_at == datetime.fromtimestamp(int(mtime), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert not any(i.downloaded for i in images)
    assert b.to_wire() == {
        "name": "b.qcow2",
        "sha256": sha(qcow2),
        "size_bytes": len(qcow2),
        "virtual_size_bytes": 16 << 20,
        "format": "qcow2",
        "imported_at": b.imported_at,
        # the sidecar's mtime: the entry's last use (images.evict)
        "last_used_at": datetime.fromtimestamp(
            int(os.stat(pool / "images" / "b.qcow2.sha256").st_mtime), UTC
        ).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def test_list_images_of_a_missing_directory_is_empty(tmp_path):
    assert list_images(tmp_path / "nowhere") == []


def test_list_images_never_hashes(cache, origin, pool, qcow2, monkeypatch):
    cache.ensure_image(pool, origin.serve("/b.qcow2", qcow2))

    def boom(*a, **k):
        raise AssertionError("list_images hashed a file")

    monkeypatch.setattr(hashlib, "file_digest", boom)
    monkeypatch.setattr(hashlib, "sha256", boom)
    assert len(list_images(pool)) == 1


def test_corrupted_sidecar_is_not_used_and_refetched(cache, origin, pool, qcow2):
    url = origin.serve("/x.qcow2", qcow2)
    cache.ensure_image(pool, url)
    (pool / "images" / "x.qcow2.sha256").write_text("not a sha")
    assert list_images(pool) == []
    img = cache.ensure_image(pool, url)
    assert img.downloaded
    assert (pool / "images" / "x.qcow2.sha256").read_text() == sha(qcow2)
    assert origin.hits["/x.qcow2"] == 2


def test_sidecar_rewritten_with_another_valid_sha_is_repaired(cache, origin, pool, qcow2):
    """A well-formed but wrong sidecar disagrees with .source: the entry is damaged
    (not an image from an unknown URL), so the next fetch repairs it, no collision."""
    url = origin.serve("/x.qcow2", qcow2)
    cache.ensure_image(pool, url)
    wrong = ("0" if sha(qcow2)[0] != "0" else "1") + sha(qcow2)[1:]
    (pool / "images" / "x.qcow2.sha256").write_text(wrong)
    assert list_images(pool) == []
    img = cache.ensure_image(pool, url)
    assert img.downloaded
    assert img.sha256 == sha(qcow2)
    assert (pool / "images" / "x.qcow2.sha256").read_text() == sha(qcow2)
    assert origin.hits["/x.qcow2"] == 2


def test_truncated_cached_image_is_not_used_and_refetched(cache, origin, pool, qcow2):
    url = origin.serve("/x.qcow2", qcow2)
    cache.ensure_image(pool, url)
    with open(pool / "images" / "x.qcow2", "r+b") as f:
        f.truncate(len(qcow2) // 2)
    assert list_images(pool) == []  # size differs from .source: found without hashing
    img = cache.ensure_image(pool, url)  # unpinned, yet not a hit
    assert img.downloaded
    assert (pool / "images" / "x.qcow2").read_bytes() == qcow2


def test_empty_cached_image_is_refetched(cache, origin, pool, qcow2):
    url = origin.serve("/x.qcow2", qcow2)
    cache.ensure_image(pool, url)
    (pool / "images" / "x.qcow2").write_bytes(b"")
    assert cache.ensure_image(pool, url).downloaded


def test_leftover_of_a_killed_download_is_swept_and_never_reported(
    make_cache, origin, pool, tmp_path
):
    """Kill a process in the middle of a download, then sweep as the agent does at start."""
    data = os.urandom(2 << 20)
    url = origin.serve("/killed.img", data, chunk_delay=0.05)  # ~1.6 s
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from otherix.agent.fs import ProtectedRoots
        from otherix.agent.images import ImageCache, ImageCacheSettings, KeyedLocks
        cache = ImageCache(
            ImageCacheSettings(allowed_networks=("127.0.0.1/32",)),
            locks=KeyedLocks(),
            protected=ProtectedRoots(),
        )
        cache.ensure_image(Path({str(pool)!r}), {url!r})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = 100
        while deadline and not os.listdir(pool / "scratch"):
            deadline -= 1
            time.sleep(0.05)
        assert os.listdir(pool / "scratch"), "the download never started"
    finally:
        proc.kill()
        proc.wait()
    leftovers = os.listdir(pool / "scratch")
    assert len(leftovers) == 1
    assert leftovers[0].startswith("killed.img.")
    assert leftovers[0].endswith(".tmp")
    assert list_images(pool) == []
    assert os.listdir(pool / "images") == []
    cache = make_cache()
    removed = cache.sweep_scratch(pool)
    assert removed == [f"scratch/{leftovers[0]}"]
    assert os.listdir(pool / "scratch") == []
    assert cache.sweep_scratch(pool) == []  # idempotent


@pytest.mark.security
def test_sweep_removes_dirs_and_links_but_not_link_targets(pool, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    (pool / "scratch" / "import").mkdir()
    (pool / "scratch" / "import" / "x.img.1.tmp").write_text("x")
    (pool / "scratch" / "link").symlink_to(outside)
    (pool / "images" / ".x.img.sha256.tmp-0123456789abcdef").write_text("x")
    os.utime(pool / "images" / ".x.img.sha256.tmp-0123456789abcdef", (0, 0))
    (pool / "images" / ".fresh.sha256.tmp-0123456789abcdef").write_text("x")
    removed = ScratchArea(ProtectedRoots()).sweep(pool)
    assert sorted(removed) == [
        "images/.x.img.sha256.tmp-0123456789abcdef",
        "scratch/import",
        "scratch/link",
    ]
    assert (outside / "keep").read_text() == "keep"
    assert os.listdir(pool / "images") == [".fresh.sha256.tmp-0123456789abcdef"]


def test_sweep_leaves_files_in_use_alone(pool):
    area = ScratchArea(ProtectedRoots())
    with area.file(pool, "busy.img") as busy:
        busy.write_bytes(b"in flight")
        (pool / "scratch" / "stale.img.1.tmp").write_bytes(b"old")
        assert area.sweep(pool) == ["scratch/stale.img.1.tmp"]
        assert busy.exists()
    assert not busy.exists()  # removed when the work ends


def test_files_in_use_are_known_to_their_own_area_only(pool):
    """No process-wide table: what is in use lives in the area the agent built."""
    with ScratchArea(ProtectedRoots()).file(pool, "busy.img") as busy:
        busy.write_bytes(b"in flight")
        assert ScratchArea(ProtectedRoots()).sweep(pool) == [f"scratch/{busy.name}"]


def test_sweep_of_missing_pool_is_a_no_op(tmp_path):
    assert ScratchArea(ProtectedRoots()).sweep(tmp_path / "nowhere") == []


@pytest.mark.parametrize("mode", [0o022, 0o077])
def test_entry_files_have_exact_modes(cache, origin, pool, qcow2, mode):
    old = os.umask(mode)
    try:
        cache.ensure_image(pool, origin.serve("/x.qcow2", qcow2))
    finally:
        os.umask(old)
    for name in ("x.qcow2", "x.qcow2.sha256", "x.qcow2.source"):
        assert (pool / "images" / name).stat().st_mode & 0o777 == 0o644

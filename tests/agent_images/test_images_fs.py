"""The large-file helpers added to otherix.agent.fs for the image cache and disks."""

from __future__ import annotations

import errno
import os

import pytest

from otherix.agent import fs, fs_clone


def test_create_exclusive_mode_and_no_overwrite(tmp_path):
    old = os.umask(0o077)
    try:
        fd = fs.create_exclusive(tmp_path / "f", 0o640)
    finally:
        os.umask(old)
    os.close(fd)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640
    with pytest.raises(FileExistsError):
        fs.create_exclusive(tmp_path / "f")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(FileExistsError):
        fs.create_exclusive(tmp_path / "link")
    assert not (tmp_path / "target").exists()


def test_publish_replaces_atomically_with_mode(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "new").write_bytes(b"new")
    (tmp_path / "b" / "final").write_bytes(b"old")
    fs.publish(tmp_path / "a" / "new", tmp_path / "b" / "final", 0o644)
    assert (tmp_path / "b" / "final").read_bytes() == b"new"
    assert (tmp_path / "b" / "final").stat().st_mode & 0o777 == 0o644
    assert not (tmp_path / "a" / "new").exists()


def test_clone_file_copy_keeps_holes_and_bytes(tmp_path):
    src = tmp_path / "sparse.raw"
    with open(src, "wb") as f:
        f.truncate(64 << 20)
        f.seek(1 << 20)
        f.write(os.urandom(4096))
        f.seek(40 << 20)
        f.write(b"tail" * 1024)
    seen: list[int] = []
    method = fs_clone.clone_file(
        src, tmp_path / "dst.raw", allow_reflink=False, progress=seen.append
    )
    dst = tmp_path / "dst.raw"
    assert method == "copy"
    assert dst.stat().st_size == 64 << 20
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_blocks * 512 < 4 << 20  # holes stayed holes
    assert seen[-1] == 64 << 20
    assert dst.stat().st_mode & 0o777 == 0o600


def test_clone_file_refused_copy_leaves_nothing(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"x" * 10000)

    def veto(need):
        raise OSError(errno.ENOSPC, "no room")

    with pytest.raises(OSError):
        fs_clone.clone_file(src, tmp_path / "dst", allow_reflink=False, before_copy=veto)
    assert not (tmp_path / "dst").exists()


def test_clone_file_reflink_falls_back_to_copy(tmp_path):
    """On a filesystem without reflink (ext4, tmpfs) FICLONE fails and a copy is made."""
    src = tmp_path / "src"
    src.write_bytes(os.urandom(100_000))
    method = fs_clone.clone_file(src, tmp_path / "dst")
    assert method in ("reflink", "copy")
    assert (tmp_path / "dst").read_bytes() == src.read_bytes()


def test_copy_data_without_copy_file_range(tmp_path, monkeypatch):
    def unsupported(*a, **k):
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", unsupported)
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 << 20))
    assert fs_clone.clone_file(src, tmp_path / "dst", allow_reflink=False) == "copy"
    assert (tmp_path / "dst").read_bytes() == src.read_bytes()


@pytest.mark.security
def test_remove_tree_stays_inside_root(tmp_path):
    protected = fs.ProtectedRoots()
    root = tmp_path / "root"
    (root / "vm" / "sub").mkdir(parents=True)
    (root / "vm" / "sub" / "f").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    (root / "vm" / "escape").symlink_to(outside)
    (root / "link").symlink_to(outside)
    assert fs.remove_tree(root, root / "vm", protected=protected) is True
    assert fs.remove_tree(root, root / "vm", protected=protected) is False
    assert (
        fs.remove_tree(root, root / "link", protected=protected) is True
    )  # the link, not its target
    assert (outside / "keep").read_text() == "keep"
    with pytest.raises(fs.UnsafePath):
        fs.remove_tree(root, root, protected=protected)
    with pytest.raises(fs.UnsafePath):
        fs.remove_tree(root, outside / "keep", protected=protected)
    assert root.is_dir()


def test_remove_file_is_idempotent(tmp_path):
    (tmp_path / "f").write_text("x")
    assert fs.remove_file(tmp_path / "f") is True
    assert fs.remove_file(tmp_path / "f") is False

"""Tests for otherix.agent.fs: safe names, realpath containment, dirs, usage.

The atomic write it re-exports is tested in tests/unit/test_fsatomic.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from otherix.agent import fs
from support.modes import mode_of
from support.modes import strict_umask as strict_umask

# --- safe_segment / safe_join -------------------------------------------------


@pytest.mark.security
@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/b", "/", "a\x00b", "\x00", "a" * 256, "é" * 128]
)
def test_safe_segment_rejects(name: str) -> None:
    with pytest.raises(fs.UnsafePath):
        fs.safe_segment(name)


@pytest.mark.security
@pytest.mark.parametrize("name", ["a", "disk.qcow2", "...", ".hidden", "a..b", "a" * 255])
def test_safe_segment_accepts(name: str) -> None:
    assert fs.safe_segment(name) == name


def test_unsafe_path_is_a_value_error() -> None:
    assert issubclass(fs.UnsafePath, ValueError)


def test_safe_join_joins_checked_segments(tmp_path: Path) -> None:
    assert fs.safe_join(tmp_path, "images", "x.img") == tmp_path / "images" / "x.img"
    assert fs.safe_join(tmp_path) == tmp_path


@pytest.mark.security
@pytest.mark.parametrize("segments", [("..",), ("images", "../etc"), ("a", "")])
def test_safe_join_rejects_any_bad_segment(tmp_path: Path, segments: tuple[str, ...]) -> None:
    with pytest.raises(fs.UnsafePath):
        fs.safe_join(tmp_path, *segments)


# --- ensure_within --------------------------------------------------------------


@pytest.mark.security
def test_ensure_within_accepts_root_and_children(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    assert fs.ensure_within(root, root) == root
    assert fs.ensure_within(root, root / "sub") == root / "sub"
    assert fs.ensure_within(root, root / "not-yet" / "file") == root / "not-yet" / "file"


@pytest.mark.security
def test_ensure_within_accepts_symlink_staying_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "link").symlink_to(root / "real")
    assert fs.ensure_within(root, root / "link") == root / "real"


@pytest.mark.security
def test_ensure_within_rejects_escape_via_symlink(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    target = root / "link" / "f"
    with pytest.raises(fs.UnsafePath) as info:
        fs.ensure_within(root, target)
    assert str(info.value) == f"{target} resolves to {outside / 'f'}, outside {root}"


@pytest.mark.security
def test_ensure_within_rejects_sibling_with_common_prefix(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root2").mkdir()
    with pytest.raises(fs.UnsafePath):
        fs.ensure_within(tmp_path / "root", tmp_path / "root2")


@pytest.mark.security
def test_ensure_within_rejects_dotdot(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(fs.UnsafePath):
        fs.ensure_within(root, root / ".." / "elsewhere")


@pytest.mark.security
def test_ensure_within_resolves_a_symlinked_root(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "x").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(real)
    assert fs.ensure_within(tmp_path / "alias", real / "x") == real / "x"


# --- first_symlinked_ancestor -----------------------------------------------


@pytest.mark.security
def test_first_symlinked_ancestor(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert fs.first_symlinked_ancestor(tmp_path / "link" / "a" / "b") == tmp_path / "link"
    assert fs.first_symlinked_ancestor(tmp_path / "real" / "a" / "b") is None
    # The path itself is not an ancestor.
    assert fs.first_symlinked_ancestor(tmp_path / "link") is None


# --- make_dir ---------------------------------------------------------------------


@pytest.mark.usefixtures("strict_umask")
def test_make_dir_creates_parents_and_sets_exact_mode(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    fs.make_dir(target)
    assert target.is_dir()
    assert mode_of(target) == 0o750


def test_make_dir_is_idempotent_and_fixes_mode(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.mkdir(mode=0o700)
    (target / "keep").write_text("x")
    fs.make_dir(target, 0o755)
    fs.make_dir(target, 0o755)
    assert mode_of(target) == 0o755
    assert (target / "keep").read_text() == "x"


def test_make_dir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError):
        fs.make_dir(tmp_path / "f")
    with pytest.raises(NotADirectoryError):
        fs.make_dir(tmp_path / "f" / "sub")


# --- write_probe ---------------------------------------------------------------------


def test_write_probe_leaves_nothing(tmp_path: Path) -> None:
    fs.write_probe(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_write_probe_replaces_stale_probe(tmp_path: Path) -> None:
    (tmp_path / fs.WRITE_PROBE_NAME).write_bytes(b"stale")
    fs.write_probe(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_write_probe_fails_in_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fs.write_probe(tmp_path / "missing")


# --- disk_usage ---------------------------------------------------------------------


def test_disk_usage_matches_statvfs(tmp_path: Path) -> None:
    usage = fs.disk_usage(tmp_path)
    st = os.statvfs(tmp_path)
    assert isinstance(usage.capacity_bytes, int)
    assert isinstance(usage.available_bytes, int)
    assert usage.capacity_bytes == st.f_blocks * st.f_frsize > 0
    # Other processes may write meanwhile; allow a small drift on "available".
    assert abs(usage.available_bytes - st.f_bavail * st.f_frsize) <= 64 * 1024 * 1024
    assert 0 < usage.available_bytes <= usage.capacity_bytes


def test_disk_usage_arithmetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = SimpleNamespace(f_blocks=1000, f_frsize=4096, f_bavail=250, f_bsize=1 << 20)
    monkeypatch.setattr(os, "statvfs", lambda path: fake)
    assert fs.disk_usage(tmp_path) == fs.Usage(capacity_bytes=4_096_000, available_bytes=1_024_000)


def test_strerror() -> None:
    assert fs.strerror(NotADirectoryError(20, "Not a directory", "/x")) == "Not a directory"
    assert fs.strerror(OSError("boom")) == "boom"

"""Tests for otherix.fsatomic: the one atomic, durable file replace (agent, api, cli)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from otherix import fsatomic
from support.modes import mode_of
from support.modes import strict_umask as strict_umask


@pytest.mark.usefixtures("strict_umask")
@pytest.mark.parametrize("mode", [0o644, 0o600, 0o640])
def test_atomic_write_creates_file_with_mode_and_no_temp(tmp_path: Path, mode: int) -> None:
    target = tmp_path / "state.json"
    fsatomic.atomic_write(target, b'{"rev": 1}', mode=mode)
    assert target.read_bytes() == b'{"rev": 1}'
    assert mode_of(target) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_atomic_write_replaces_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old content that is longer")
    fsatomic.atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert mode_of(target) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_atomic_write_failure_keeps_old_file_and_removes_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        fsatomic.atomic_write(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_atomic_write_large_payload(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    fsatomic.atomic_write(tmp_path / "blob", data)
    assert (tmp_path / "blob").read_bytes() == data


def test_fsync_dir_accepts_directory(tmp_path: Path) -> None:
    fsatomic.fsync_dir(tmp_path)

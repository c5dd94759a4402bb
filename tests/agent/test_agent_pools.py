"""Tests for otherix.agent.pools: the pure plan (tables) and the apply step (tmp dirs)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from otherix.agent import fs
from otherix.agent.fs import ProtectedRoots
from otherix.agent.pools import (
    POOL_SUBDIRS,
    DeclaredPool,
    Plan,
    PoolReconciler,
    PoolReport,
    PoolUnknownError,
    RegisteredPool,
    ensure_pool,
    plan,
)
from support.modes import mode_of
from support.modes import strict_umask as strict_umask


def pool(
    name: str, path: str = "/var/lib/otherix/pools/x", type_: str = "local_dir"
) -> DeclaredPool:
    return DeclaredPool(name=name, type=type_, path=path, config={})


def reg(*names: str) -> dict[str, RegisteredPool]:
    return {n.lower(): RegisteredPool(name=n, path=f"/p/{n}") for n in names}


@pytest.fixture(autouse=True)
def _strict_umask(strict_umask: None) -> None:
    """Modes must come out exact whatever the umask (every test here)."""


# --- plan (pure, table) ---------------------------------------------------------------

PLAN_CASES = [
    pytest.param([], {}, Plan(ensure=[], unregister=[]), id="nothing"),
    pytest.param([pool("a")], {}, Plan(ensure=[pool("a")], unregister=[]), id="new-pool"),
    pytest.param(
        [pool("a")],
        reg("a"),
        Plan(ensure=[pool("a")], unregister=[]),
        id="known-pool-ensured-again",
    ),
    pytest.param([], reg("b", "A"), Plan(ensure=[], unregister=["A", "b"]), id="all-undeclared"),
    pytest.param(
        [pool("a")], reg("a", "gone"), Plan(ensure=[pool("a")], unregister=["gone"]), id="mixed"
    ),
    pytest.param(
        [pool("Fast")],
        reg("fast"),
        Plan(ensure=[pool("Fast")], unregister=[]),
        id="case-insensitive",
    ),
    pytest.param(
        [pool("b"), pool("a")],
        {},
        Plan(ensure=[pool("b"), pool("a")], unregister=[]),
        id="declared-order-kept",
    ),
    pytest.param(
        [pool("a", "/one"), pool("A", "/two")],
        {},
        Plan(ensure=[pool("a", "/one")], unregister=[]),
        id="duplicate-first-wins",
    ),
    pytest.param(
        [pool("a", "/new")],
        reg("a"),
        Plan(ensure=[pool("a", "/new")], unregister=[]),
        id="path-changed",
    ),
    pytest.param(
        [pool("bad", "relative")],
        reg("bad"),
        Plan(ensure=[pool("bad", "relative")], unregister=[]),
        id="invalid-still-ensured",
    ),
]


@pytest.mark.parametrize(("declared", "registered", "expected"), PLAN_CASES)
def test_plan(
    declared: list[DeclaredPool], registered: dict[str, RegisteredPool], expected: Plan
) -> None:
    assert plan(declared, registered) == expected


def test_plan_does_not_mutate_inputs() -> None:
    declared = [pool("a")]
    registered = reg("a", "b")
    plan(declared, registered)
    assert declared == [pool("a")]
    assert registered == reg("a", "b")


# --- wire ---------------------------------------------------------------------------


def test_declared_pool_from_wire() -> None:
    p = DeclaredPool.from_wire(
        {
            "name": "Fast",
            "type": "local_dir",
            "path": "/var/lib/otherix/pools/fast",
            "config": {"k": 1},
        }
    )
    assert p == DeclaredPool("Fast", "local_dir", "/var/lib/otherix/pools/fast", {"k": 1})


def test_declared_pool_from_wire_with_identity() -> None:
    from datetime import UTC, datetime

    from otherix.agent.pools import DeclaredDisk

    p = DeclaredPool.from_wire(
        {
            "name": "fast",
            "type": "local_dir",
            "path": "/var/lib/otherix/pools/fast",
            "id": "pool-1",
            "cluster_id": "cluster-1",
            "created_at": "2027-01-02T03:04:05.5Z",
            "identity": "verify",
            "marker_id": "mark-1",
            "disks": [{"id": "d1", "vm_id": "v1", "file_path": "/var/lib/otherix/pools/fast/d"}],
        }
    )
    assert (p.id, p.cluster_id, p.identity, p.marker_id) == (
        "pool-1",
        "cluster-1",
        "verify",
        "mark-1",
    )
    assert p.created_at == datetime(2027, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)
    assert p.disks == (DeclaredDisk("d1", "v1", "/var/lib/otherix/pools/fast/d"),)
    with pytest.raises(ValueError, match="identity mode"):
        DeclaredPool.from_wire({"name": "a", "type": "local_dir", "path": "/p", "identity": "x"})
    with pytest.raises(ValueError, match="created_at"):
        DeclaredPool.from_wire({"name": "a", "type": "local_dir", "path": "/p", "created_at": "x"})


@pytest.mark.parametrize(
    "wire",
    [
        {"name": "a", "type": "local_dir", "path": "/p"},
        {"name": "a", "type": "local_dir", "path": "/p", "config": None},
    ],
)
def test_declared_pool_from_wire_config_left_out(wire: dict[str, object]) -> None:
    assert DeclaredPool.from_wire(wire).config == {}


@pytest.mark.parametrize(
    "wire",
    [
        {"name": 3, "type": "local_dir", "path": "/p"},
        {"name": "a", "type": "local_dir", "path": "/p", "config": []},
    ],
)
def test_declared_pool_from_wire_rejects_bad_types(wire: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="declared pool"):
        DeclaredPool.from_wire(wire)


def test_pool_report_to_wire() -> None:
    report = PoolReport("a", "failed", "boom", None, None, "pool_missing")
    assert report.to_wire() == {
        "name": "a",
        "reconciliation_status": "failed",
        "reconciliation_error": "boom",
        "reconciliation_reason": "pool_missing",
        "capacity_bytes": None,
        "available_bytes": None,
        "marker_id": None,
        "missing_disks": None,
    }


# --- ensure_pool: validation messages ---------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        (pool("", "/x"), "pool: name is required"),
        (pool("x", "/x", type_="lvm"), 'pool "x": unsupported type "lvm"'),
        (pool("x", ""), 'pool "x": root is required'),
        (pool("x", "var/lib/pools"), 'pool "x": root must be absolute (got "var/lib/pools")'),
        (pool("x", "./pools"), 'pool "x": root must be absolute (got "./pools")'),
        (
            pool("x", "/a/../etc"),
            'pool "x": root must not contain a ".." segment (got "/a/../etc")',
        ),
        (pool("x", "/a\x00b"), 'pool "x": root must not contain NUL'),
    ],
)
def test_ensure_pool_rejects_bad_declarations(declared: DeclaredPool, message: str) -> None:
    report = ensure_pool(declared)
    assert report == PoolReport(declared.name, "failed", message, None, None, "pool_invalid")


# --- reconcile / apply (tmp dirs) ---------------------------------------------------


def test_declared_pool_becomes_ready_with_subdirs(tmp_path: Path) -> None:
    root = tmp_path / "pools" / "fast"
    rec = PoolReconciler(protected=ProtectedRoots())
    [report] = rec.reconcile([pool("fast", str(root))])
    assert report.reconciliation_status == "ready"
    assert report.reconciliation_error is None
    assert mode_of(root) == 0o750
    assert sorted(p.name for p in root.iterdir()) == ["images", "scratch", "vms"]
    for sub in POOL_SUBDIRS:
        assert (root / sub).is_dir()
        assert mode_of(root / sub) == 0o750
    assert rec.lookup("fast") == RegisteredPool("fast", str(root))


def test_second_reconcile_is_a_noop_and_still_ready(tmp_path: Path) -> None:
    root = tmp_path / "fast"
    rec = PoolReconciler(protected=ProtectedRoots())
    declared = [pool("fast", str(root))]
    rec.reconcile(declared)
    (root / "images" / "ubuntu.img").write_bytes(b"image")
    before = sorted((str(p.relative_to(root)), mode_of(p)) for p in root.rglob("*"))
    [report] = rec.reconcile(declared)
    assert report.reconciliation_status == "ready"
    assert sorted((str(p.relative_to(root)), mode_of(p)) for p in root.rglob("*")) == before
    assert (root / "images" / "ubuntu.img").read_bytes() == b"image"


def test_undeclared_pool_is_unregistered_and_files_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keep, gone = tmp_path / "keep", tmp_path / "gone"
    rec = PoolReconciler(protected=ProtectedRoots())
    rec.reconcile([pool("keep", str(keep)), pool("Gone", str(gone))])
    (gone / "vms" / "disk.qcow2").write_bytes(b"disk")
    with caplog.at_level(logging.INFO, logger="otherix.agent.pools"):
        reports = rec.reconcile([pool("keep", str(keep))])
    assert [r.name for r in reports] == ["keep"]
    assert rec.lookup("gone") is None
    assert set(rec.registered) == {"keep"}
    assert gone.is_dir()
    assert (gone / "vms" / "disk.qcow2").read_bytes() == b"disk"
    assert "pool unregistered (CP-side delete reconciled)" in caplog.messages


def test_relative_path_fails_with_exact_message() -> None:
    rec = PoolReconciler(protected=ProtectedRoots())
    [report] = rec.reconcile([pool("rel", "pools/rel")])
    assert report.reconciliation_status == "failed"
    assert report.reconciliation_error == 'pool "rel": root must be absolute (got "pools/rel")'
    assert rec.lookup("rel") == RegisteredPool("rel", "pools/rel")


def test_file_at_path_fails_with_mkdir_message(tmp_path: Path) -> None:
    root = tmp_path / "pool"
    root.write_text("not a dir")
    [report] = PoolReconciler(protected=ProtectedRoots()).reconcile([pool("p", str(root))])
    assert report.reconciliation_status == "failed"
    assert report.reconciliation_error == f'pool "p" root: mkdir {root}: File exists'
    assert root.read_text() == "not a dir"


def test_path_under_a_file_fails_unwritable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    root = tmp_path / "file" / "pool"
    [report] = PoolReconciler(protected=ProtectedRoots()).reconcile([pool("p", str(root))])
    assert report.reconciliation_status == "failed"
    assert report.reconciliation_error == f'pool "p" root: mkdir {root}: Not a directory'


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root ignores permission bits; see the under-a-file test"
)
def test_read_only_directory_fails(tmp_path: Path) -> None:
    # The pool lives inside a read-only directory: make_dir on the pool root
    # itself would chmod it back to 0750 (the owner may), so block its parent.
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    root = parent / "pool"
    try:
        [report] = PoolReconciler(protected=ProtectedRoots()).reconcile([pool("p", str(root))])
    finally:
        parent.chmod(0o700)
    assert report == PoolReport(
        "p", "failed", f'pool "p" root: mkdir {root}: Permission denied', None, None
    )


@pytest.mark.security
def test_symlink_at_pool_path_pointing_outside_fails(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    (tmp_path / "pools").mkdir()
    root = tmp_path / "pools" / "p"
    root.symlink_to(outside)
    [report] = PoolReconciler(protected=ProtectedRoots()).reconcile([pool("p", str(root))])
    assert report.reconciliation_status == "failed"
    assert report.reconciliation_error == f'pool "p": {root} is a symlink that escapes the pool'
    assert list(outside.iterdir()) == []
    assert mode_of(outside) == 0o700  # no chmod landed outside


@pytest.mark.security
def test_dangling_symlink_at_pool_path_fails_without_creating_target(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    root = tmp_path / "p"
    root.symlink_to(target)
    [report] = PoolReconciler(protected=ProtectedRoots()).reconcile([pool("p", str(root))])
    assert report.reconciliation_error == f'pool "p": {root} is a symlink that escapes the pool'
    assert not target.exists()


@pytest.mark.security
def test_images_symlink_to_outside_fails(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    root = tmp_path / "p"
    root.mkdir()
    (root / "images").symlink_to(outside)
    [report] = PoolReconciler(protected=ProtectedRoots()).reconcile([pool("p", str(root))])
    assert report.reconciliation_status == "failed"
    assert report.reconciliation_error == (
        f'pool "p": {root / "images"} is a symlink that escapes the pool'
    )
    assert list(outside.iterdir()) == []
    assert mode_of(outside) == 0o700


@pytest.mark.security
def test_subdir_symlink_staying_inside_is_accepted(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / "real-vms").mkdir(parents=True)
    (root / "vms").symlink_to(root / "real-vms")
    [report] = PoolReconciler(protected=ProtectedRoots()).reconcile([pool("p", str(root))])
    assert report.reconciliation_status == "ready"


@pytest.mark.security
def test_symlinked_ancestor_fails(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "pools"
    link.symlink_to(real)
    root = link / "p"
    [report] = PoolReconciler(protected=ProtectedRoots()).reconcile([pool("p", str(root))])
    assert report.reconciliation_status == "failed"
    assert report.reconciliation_error == f'pool "p": {root} traverses a symlink ({link})'
    assert list(real.iterdir()) == []


def test_failed_pool_recovers_when_cause_removed(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.write_text("blocker")
    rec = PoolReconciler(protected=ProtectedRoots())
    declared = [pool("p", str(root))]
    [first] = rec.reconcile(declared)
    assert first.reconciliation_status == "failed"
    assert rec.lookup("p") is not None  # still registered while failed
    root.unlink()
    [second] = rec.reconcile(declared)
    assert second.reconciliation_status == "ready"
    assert second.reconciliation_error is None
    assert (root / "images").is_dir()


def test_capacity_and_available_match_statvfs(tmp_path: Path) -> None:
    root = tmp_path / "p"
    [report] = PoolReconciler(protected=ProtectedRoots()).reconcile([pool("p", str(root))])
    st = os.statvfs(root)
    assert isinstance(report.capacity_bytes, int)
    assert isinstance(report.available_bytes, int)
    assert report.capacity_bytes == st.f_blocks * st.f_frsize > 0
    assert report.available_bytes > 0
    assert abs(report.available_bytes - st.f_bavail * st.f_frsize) <= 64 * 1024 * 1024


def test_usage_comes_from_statvfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fs, "disk_usage", lambda path: fs.Usage(4096 * 10, 4096 * 3))
    [report] = PoolReconciler(protected=ProtectedRoots()).reconcile(
        [pool("p", str(tmp_path / "p"))]
    )
    assert (report.capacity_bytes, report.available_bytes) == (40960, 12288)


def test_names_are_case_insensitive_in_registry(tmp_path: Path) -> None:
    rec = PoolReconciler(protected=ProtectedRoots())
    rec.reconcile([pool("Fast", str(tmp_path / "fast"))])
    assert set(rec.registered) == {"fast"}
    assert rec.lookup("FAST") == RegisteredPool("Fast", str(tmp_path / "fast"))
    assert rec.lookup("fast") == rec.lookup("Fast")
    # Re-declared with another case: same entry, new canonical spelling, not unregistered.
    [report] = rec.reconcile([pool("FAST", str(tmp_path / "fast"))])
    assert report.name == "FAST"
    assert rec.registered == {"fast": RegisteredPool("FAST", str(tmp_path / "fast"))}


def test_reports_sorted_by_lower_name(tmp_path: Path) -> None:
    names = ["b", "A", "c", "a2"]
    reports = PoolReconciler(protected=ProtectedRoots()).reconcile(
        [pool(n, str(tmp_path / n)) for n in names]
    )
    assert [r.name for r in reports] == ["A", "a2", "b", "c"]


def test_changed_root_replaces_registry_entry_and_moves_nothing(tmp_path: Path) -> None:
    rec = PoolReconciler(protected=ProtectedRoots())
    rec.reconcile([pool("p", str(tmp_path / "one"))])
    rec.reconcile([pool("p", str(tmp_path / "two"))])
    assert rec.lookup("p") == RegisteredPool("p", str(tmp_path / "two"))
    assert (tmp_path / "one" / "images").is_dir()
    assert (tmp_path / "two" / "images").is_dir()


def test_no_probe_left_behind(tmp_path: Path) -> None:
    root = tmp_path / "p"
    PoolReconciler(protected=ProtectedRoots()).reconcile([pool("p", str(root))])
    assert not (root / fs.WRITE_PROBE_NAME).exists()


# --- scan -------------------------------------------------------------------------------


def test_scan_rereads_usage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = PoolReconciler(protected=ProtectedRoots())
    rec.reconcile([pool("p", str(tmp_path / "p"))])
    monkeypatch.setattr(fs, "disk_usage", lambda path: fs.Usage(100, 7))
    assert rec.scan("P") == PoolReport("p", "ready", None, 100, 7)


def test_scan_unknown_or_unregistered_pool_raises(tmp_path: Path) -> None:
    rec = PoolReconciler(protected=ProtectedRoots())
    with pytest.raises(PoolUnknownError):
        rec.scan("nope")
    rec.reconcile([pool("p", str(tmp_path / "p"))])
    rec.reconcile([])
    with pytest.raises(PoolUnknownError):
        rec.scan("p")


def test_scan_of_failed_pool_keeps_failure() -> None:
    rec = PoolReconciler(protected=ProtectedRoots())
    [report] = rec.reconcile([pool("rel", "relative")])
    assert rec.scan("rel") == report

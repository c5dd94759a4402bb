"""Pool identity on real directories: markers, known pools that lost their directory or
marker, adoption, overlapping roots, protected roots and missing VM disks.

Drives ``PoolState`` (``otherix.agent.report``) with the wire models the control
plane sends, so the re-rooting of disk paths is exercised too; checks what is
on disk and what the heartbeat would carry.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from otherix.agent.fs import ProtectedRoots
from otherix.agent.images.disks import remove_disk
from otherix.agent.images.locks import KeyedLocks
from otherix.agent.images.scratch import ScratchArea
from otherix.agent.pools import PoolReconciler
from otherix.agent.report import PoolState
from otherix.models.heartbeat import DeclaredDisk, DeclaredPool, PoolReport

CLUSTER = str(uuid.uuid4())
T0 = datetime(2027, 1, 1, tzinfo=UTC)
MARKER = ".otherix-pool.json"


class Pool:
    """One declared pool as the control plane sends it; ``identity`` as the CP knows it."""

    def __init__(self, root: Path, name: str, minutes: int = 0) -> None:
        self.root = root
        self.name = name
        self.id = str(uuid.uuid4())
        self.marker_id = str(uuid.uuid4())
        self.identity = "create"
        self.created_at = T0 + timedelta(minutes=minutes)
        self.disks: list[DeclaredDisk] = []

    def wire(self) -> DeclaredPool:
        return DeclaredPool(
            name=self.name,
            type="local_dir",
            path=str(self.root),
            id=self.id,
            cluster_id=CLUSTER,
            created_at=self.created_at,
            identity=self.identity,
            marker_id=self.marker_id,
            disks=self.disks,
        )

    def marker(self) -> dict:
        return json.loads((self.root / MARKER).read_text())


def state(tmp_path: Path, protected: ProtectedRoots | None = None) -> PoolState:
    """A pool state; ``protected`` shared with the removals a test makes, as the agent does."""
    roots = ProtectedRoots() if protected is None else protected
    return PoolState(PoolReconciler(protected=roots), allowed_prefixes=[f"{tmp_path}/"])


def report(st: PoolState, name: str) -> PoolReport:
    return next(r for r in st.reports if r.name == name)


def entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def test_first_materialisation_writes_the_marker(tmp_path: Path) -> None:
    p = Pool(tmp_path / "pools" / "fast", "fast")
    st = state(tmp_path)
    st.reconcile([p.wire()])
    rep = report(st, "fast")
    assert rep.reconciliation_status == "ready"
    assert rep.marker_id == p.marker_id
    assert rep.missing_disks == []
    assert entries(p.root) == [MARKER, "images", "scratch", "vms"]
    marker = p.marker()
    assert marker["kind"] == "otherix-pool-marker"
    assert (marker["pool_id"], marker["cluster_id"], marker["marker_id"]) == (
        p.id,
        CLUSTER,
        p.marker_id,
    )
    assert marker["pool_name"] == "fast"
    assert marker["path"] == str(p.root)
    st_root = os.stat(p.root)
    assert marker["device"]["st_dev"] == st_root.st_dev
    assert marker["device"]["fsid"] == os.statvfs(p.root).f_fsid
    assert stat.S_IMODE(os.stat(p.root / MARKER).st_mode) == 0o600
    assert not [n for n in entries(p.root) if ".tmp-" in n]  # the atomic write left no temp


def test_a_known_pool_whose_directory_is_gone_is_not_recreated(tmp_path: Path) -> None:
    p = Pool(tmp_path / "pools" / "fast", "fast")
    st = state(tmp_path)
    st.reconcile([p.wire()])
    p.identity = "verify"  # the control plane recorded the marker
    subprocess.run(["rm", "-rf", str(p.root)], check=True)
    for _ in range(2):
        st.reconcile([p.wire()])
        rep = report(st, "fast")
        assert rep.reconciliation_status == "failed"
        assert rep.reconciliation_reason == "pool_missing"
        assert rep.marker_id is None
        assert rep.missing_disks is None
        assert not p.root.exists()


def test_the_window_before_the_control_plane_records_the_marker_is_closed(tmp_path: Path) -> None:
    # identity still "create" (the CP's record lags one heartbeat), but this
    # agent wrote the marker: a vanished directory is not re-created either.
    p = Pool(tmp_path / "pools" / "fast", "fast")
    st = state(tmp_path)
    st.reconcile([p.wire()])
    subprocess.run(["rm", "-rf", str(p.root)], check=True)
    st.reconcile([p.wire()])
    assert report(st, "fast").reconciliation_reason == "pool_missing"
    assert not p.root.exists()


def test_the_agent_remembers_its_markers_across_a_restart(tmp_path: Path) -> None:
    memory = tmp_path / "agent" / "pools.json"
    memory.parent.mkdir()
    p = Pool(tmp_path / "pools" / "fast", "fast")
    first = PoolState(
        PoolReconciler(memory, protected=ProtectedRoots()), allowed_prefixes=[f"{tmp_path}/"]
    )
    first.reconcile([p.wire()])
    assert json.loads(memory.read_text()) == {p.id: p.marker_id}
    assert stat.S_IMODE(os.stat(memory).st_mode) == 0o600
    subprocess.run(["rm", "-rf", str(p.root)], check=True)
    # a restarted agent, the control plane still saying "create" (it never got the report)
    again = PoolState(
        PoolReconciler(memory, protected=ProtectedRoots()), allowed_prefixes=[f"{tmp_path}/"]
    )
    again.reconcile([p.wire()])
    assert report(again, "fast").reconciliation_reason == "pool_missing"
    assert not p.root.exists()
    again.reconcile([])  # the pool is deleted: forgotten
    assert json.loads(memory.read_text()) == {}


def test_a_missing_marker_fails_and_nothing_is_created_until_it_is_back(tmp_path: Path) -> None:
    p = Pool(tmp_path / "pools" / "fast", "fast")
    st = state(tmp_path)
    st.reconcile([p.wire()])
    p.identity = "verify"
    saved = (p.root / MARKER).read_bytes()
    for name in entries(p.root):  # an empty mount point: the disk is not mounted
        subprocess.run(["rm", "-rf", str(p.root / name)], check=True)
    st.reconcile([p.wire()])
    rep = report(st, "fast")
    assert rep.reconciliation_reason == "pool_identity_mismatch"
    assert "marker missing: is the disk mounted?" in (rep.reconciliation_error or "")
    assert entries(p.root) == []  # no probe, no subdirectories, no marker
    (p.root / MARKER).write_bytes(saved)  # the disk is back
    st.reconcile([p.wire()])
    rep = report(st, "fast")
    assert rep.reconciliation_status == "ready"
    assert rep.reconciliation_reason is None
    assert entries(p.root) == [MARKER, "images", "scratch", "vms"]


@pytest.mark.parametrize("foreign", ["pool", "cluster"])
def test_a_foreign_marker_is_never_adopted_or_overwritten(tmp_path: Path, foreign: str) -> None:
    other = Pool(tmp_path / "pools" / "there", "there")
    st = state(tmp_path)
    st.reconcile([other.wire()])
    data = (other.root / MARKER).read_bytes()
    if foreign == "cluster":
        doc = json.loads(data)
        doc["cluster_id"] = str(uuid.uuid4())
        data = json.dumps(doc).encode()
    p = Pool(tmp_path / "pools" / "fast", "fast")
    p.root.mkdir(parents=True)
    (p.root / MARKER).write_bytes(data)
    for identity in ("create", "adopt", "verify"):
        p.identity = identity
        fresh = state(tmp_path)
        fresh.reconcile([p.wire()])
        rep = report(fresh, "fast")
        assert rep.reconciliation_reason == "pool_identity_mismatch", identity
        assert other.id in (rep.reconciliation_error or "") or foreign == "cluster"
        assert entries(p.root) == [MARKER]
        assert (p.root / MARKER).read_bytes() == data


def test_an_unreadable_marker_is_never_overwritten(tmp_path: Path) -> None:
    p = Pool(tmp_path / "pools" / "fast", "fast")
    p.root.mkdir(parents=True)
    (p.root / MARKER).write_text("{not json")
    st = state(tmp_path)
    st.reconcile([p.wire()])
    rep = report(st, "fast")
    assert rep.reconciliation_reason == "pool_identity_mismatch"
    assert "cannot be read" in (rep.reconciliation_error or "")
    assert (p.root / MARKER).read_text() == "{not json"
    assert entries(p.root) == [MARKER]


def test_a_pool_from_before_markers_is_adopted_once_with_its_layout(tmp_path: Path) -> None:
    p = Pool(tmp_path / "pools" / "old", "old")
    for sub in ("images", "scratch", "vms"):
        (p.root / sub).mkdir(parents=True)
    (p.root / "vms" / "disk-data").write_text("keep me")
    p.identity = "adopt"
    st = state(tmp_path)
    st.reconcile([p.wire()])
    assert report(st, "old").reconciliation_status == "ready"
    assert p.marker()["marker_id"] == p.marker_id
    assert (p.root / "vms" / "disk-data").read_text() == "keep me"


def test_an_empty_directory_is_not_adopted(tmp_path: Path) -> None:
    p = Pool(tmp_path / "pools" / "old", "old")
    p.root.mkdir(parents=True)  # the unmounted disk's mount point
    p.identity = "adopt"
    st = state(tmp_path)
    st.reconcile([p.wire()])
    assert report(st, "old").reconciliation_reason == "pool_identity_mismatch"
    assert entries(p.root) == []
    missing = Pool(tmp_path / "pools" / "gone", "gone")
    missing.identity = "adopt"
    st.reconcile([p.wire(), missing.wire()])
    assert report(st, "gone").reconciliation_reason == "pool_missing"
    assert not missing.root.exists()


def test_reinit_replaces_an_earlier_marker_of_the_same_pool(tmp_path: Path) -> None:
    p = Pool(tmp_path / "pools" / "fast", "fast")
    st = state(tmp_path)
    st.reconcile([p.wire()])
    first = p.marker()
    p.identity, p.marker_id = "create", str(uuid.uuid4())  # what reinit declares
    st.reconcile([p.wire()])
    rep = report(st, "fast")
    assert rep.reconciliation_status == "ready"
    assert rep.marker_id == p.marker_id
    assert p.marker()["marker_id"] == p.marker_id != first["marker_id"]
    # the old disk coming back (its marker of the earlier incarnation) is refused
    p.identity = "verify"
    (p.root / MARKER).write_text(json.dumps(first))
    st.reconcile([p.wire()])
    rep = report(st, "fast")
    assert rep.reconciliation_reason == "pool_identity_mismatch"
    assert "earlier marker" in (rep.reconciliation_error or "")


# --- VM disks ----------------------------------------------------------------------------


def test_missing_disks_are_reported_and_warned_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = Pool(tmp_path / "pools" / "fast", "fast")
    st = state(tmp_path)
    st.reconcile([p.wire()])
    vm_a, vm_b = str(uuid.uuid4()), str(uuid.uuid4())
    for vm in (vm_a, vm_b):
        (p.root / "vms" / vm).mkdir()
        (p.root / "vms" / vm / "disk.qcow2").write_bytes(b"QFI\xfb")
    p.disks = [
        DeclaredDisk(id=f"disk-{vm}", vm_id=vm, file_path=f"{p.root}/vms/{vm}/disk.qcow2")
        for vm in (vm_a, vm_b)
    ]
    p.disks.append(DeclaredDisk(id="disk-outside", vm_id=vm_a, file_path="/etc/passwd"))
    caplog.set_level(logging.INFO, logger="otherix.agent.pools")
    st.reconcile([p.wire()])
    assert report(st, "fast").missing_disks == ["disk-outside"]  # never outside the pool
    (p.root / "vms" / vm_b / "disk.qcow2").unlink()
    for _ in range(3):
        st.reconcile([p.wire()])
        rep = report(st, "fast")
        assert rep.reconciliation_status == "ready"  # the pool stays ready
        assert rep.missing_disks == sorted(["disk-outside", f"disk-{vm_b}"])
    warned = [r for r in caplog.records if r.getMessage() == "vm disk missing"]
    assert [r.disk for r in warned] == ["disk-outside", f"disk-{vm_b}"]  # type: ignore[attr-defined]
    (p.root / "vms" / vm_b / "disk.qcow2").write_bytes(b"QFI\xfb")
    st.reconcile([p.wire()])
    assert report(st, "fast").missing_disks == ["disk-outside"]
    assert any(r.getMessage() == "vm disk present again" for r in caplog.records)


def test_disk_paths_are_re_rooted_with_host_root(tmp_path: Path) -> None:
    host = tmp_path / "fsroot"
    p = Pool(Path("/var/lib/otherix/pools/fast"), "fast")
    vm = str(uuid.uuid4())
    p.disks = [DeclaredDisk(id="d1", vm_id=vm, file_path=f"{p.root}/vms/{vm}/disk.qcow2")]
    st = PoolState(
        PoolReconciler(protected=ProtectedRoots()),
        allowed_prefixes=["/var/lib/otherix/pools/"],
        host_root=host,
    )
    st.reconcile([p.wire()])
    assert report(st, "fast").missing_disks == ["d1"]
    real = host / "var/lib/otherix/pools/fast"
    (real / "vms" / vm).mkdir()
    (real / "vms" / vm / "disk.qcow2").write_bytes(b"x")
    st.reconcile([p.wire()])
    assert report(st, "fast").missing_disks == []


# --- one directory, one pool ------------------------------------------------------------


def test_the_later_of_two_nested_pools_fails_and_gets_nothing(tmp_path: Path) -> None:
    outer = Pool(tmp_path / "pools" / "outer", "outer", minutes=0)
    inner = Pool(tmp_path / "pools" / "outer" / "vms" / "inner", "inner", minutes=5)
    st = state(tmp_path)
    st.reconcile([inner.wire(), outer.wire()])  # declared order does not matter
    assert report(st, "outer").reconciliation_status == "ready"
    rep = report(st, "inner")
    assert rep.reconciliation_reason == "pool_path_overlap"
    assert '"outer"' in (rep.reconciliation_error or "")
    assert outer.id in (rep.reconciliation_error or "")
    assert not inner.root.exists()


def test_a_symlinked_parent_cannot_make_two_pools_one_directory(tmp_path: Path) -> None:
    real = tmp_path / "pools" / "a"
    first = Pool(real, "a", minutes=0)
    st = state(tmp_path)
    st.reconcile([first.wire()])
    (tmp_path / "pools" / "alias").symlink_to(tmp_path / "pools")
    second = Pool(tmp_path / "pools" / "alias" / "a", "b", minutes=1)
    st.reconcile([first.wire(), second.wire()])
    rep = report(st, "b")
    assert rep.reconciliation_status == "failed"
    assert rep.reconciliation_reason == "pool_path_unsafe"  # refused before the overlap check
    assert "traverses a symlink" in (rep.reconciliation_error or "")
    assert first.marker()["pool_id"] == first.id  # untouched


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a bind mount")
def test_a_bind_mount_cannot_make_two_pools_one_directory(tmp_path: Path) -> None:
    first = Pool(tmp_path / "pools" / "a", "a", minutes=0)
    st = state(tmp_path)
    st.reconcile([first.wire()])
    second = Pool(tmp_path / "pools" / "b", "b", minutes=1)
    second.root.mkdir()
    subprocess.run(["mount", "--bind", str(first.root), str(second.root)], check=True)
    try:
        st.reconcile([first.wire(), second.wire()])
        assert report(st, "b").reconciliation_reason == "pool_path_overlap"
        assert first.marker()["pool_id"] == first.id
    finally:
        subprocess.run(["umount", str(second.root)], check=True)


def test_the_scratch_sweep_never_enters_another_pool(tmp_path: Path) -> None:
    outer = Pool(tmp_path / "pools" / "outer", "outer", minutes=0)
    inner = Pool(tmp_path / "pools" / "outer" / "scratch", "inner", minutes=5)  # a pre-fix row
    protected = ProtectedRoots()
    st = state(tmp_path, protected)
    st.reconcile([outer.wire()])
    # the inner pool's data, from before the overlap rule
    (outer.root / "scratch" / "vms" / "vm-1").mkdir(parents=True)
    (outer.root / "scratch" / "vms" / "vm-1" / "disk.qcow2").write_text("inner's disk")
    (outer.root / "scratch" / "leftover.tmp").write_text("x")
    st.reconcile([outer.wire(), inner.wire()])
    assert report(st, "inner").reconciliation_reason == "pool_path_overlap"
    removed = ScratchArea(protected).sweep(outer.root)
    assert removed == []
    assert (outer.root / "scratch" / "vms" / "vm-1" / "disk.qcow2").read_text() == "inner's disk"
    # once the inner pool is no longer declared, its directory is the outer pool's scratch again
    st.reconcile([outer.wire()])
    assert sorted(ScratchArea(protected).sweep(outer.root)) == [
        "scratch/leftover.tmp",
        "scratch/vms",
    ]


def test_a_vm_delete_never_removes_another_pools_root(tmp_path: Path) -> None:
    outer = Pool(tmp_path / "pools" / "outer", "outer", minutes=0)
    vm = str(uuid.uuid4())
    inner = Pool(tmp_path / "pools" / "outer" / "vms" / vm / "inner", "inner", minutes=5)
    protected = ProtectedRoots()
    st = state(tmp_path, protected)
    st.reconcile([outer.wire()])
    (inner.root / "vms").mkdir(parents=True)
    (inner.root / "vms" / "data").write_text("inner's")
    st.reconcile([outer.wire(), inner.wire()])
    with pytest.raises(Exception, match="root of another pool"):
        remove_disk(outer.root, vm, locks=KeyedLocks(), protected=protected)
    assert (inner.root / "vms" / "data").read_text() == "inner's"

"""Drift on a real pool directory (otherix.agent.drift through PoolState): orphans,
missing disks, stray cache and scratch files, the grace period, incoming disks, symlinks
out of the pool, and the purge and import tasks that re-check what they act on."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from otherix.agent import drift
from otherix.agent.fs import ProtectedRoots
from otherix.agent.pools import PoolReconciler
from otherix.agent.report import PoolState
from otherix.agent.tasks import DRIFT_PURGE, VM_IMPORT, execute
from otherix.domain.drift import MAX_ITEMS, Owned
from otherix.models.heartbeat import AgentTask, DeclaredDisk, DeclaredPool, PoolReport

CLUSTER = str(uuid.uuid4())
NOW = datetime.now(UTC)
OLD = time.time() - 2 * 3600  # past the one-hour grace period


def declared(root: Path, disks: list[DeclaredDisk]) -> DeclaredPool:
    return DeclaredPool(
        name="fast",
        type="local_dir",
        path=str(root),
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, str(root))),  # the same pool on every pass
        cluster_id=CLUSTER,
        marker_id="m-1",
        disks=disks,
    )


def make_state(tmp_path: Path) -> PoolState:
    protected = ProtectedRoots()  # shared as in the agent: it holds the pool's own root
    st = PoolState(
        PoolReconciler(protected=protected),
        allowed_prefixes=[f"{tmp_path}/"],
        usage_interval=0,  # scan on every pass
    )
    st.set_scratch(lambda _p: False, protected)
    return st


def report(st: PoolState) -> PoolReport:
    return next(r for r in st.reports if r.name == "fast")


def write(path: Path, data: bytes = b"x" * 1000, *, old: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if old:
        os.utime(path, (OLD, OLD))
    return path


def qcow2(path: Path, size: str = "1M") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def drift_paths(st: PoolState) -> dict[str, str]:
    rep = report(st)
    assert rep.drift is not None
    return {i.path: i.kind for i in rep.drift.items}


def test_a_pool_scan_finds_orphans_strays_and_keeps_what_is_owned(tmp_path: Path) -> None:
    root = tmp_path / "pool"
    owned_vm, incoming_vm, orphan_vm, junk_vm = (str(uuid.uuid4()) for _ in range(4))
    disks = [
        DeclaredDisk(id="d-owned", vm_id=owned_vm, file_path=f"{root}/vms/{owned_vm}/disk.qcow2"),
        DeclaredDisk(id="d-gone", vm_id=str(uuid.uuid4()), file_path=f"{root}/vms/x/disk.raw"),
        DeclaredDisk(
            id="d-in", vm_id=incoming_vm, file_path=f"{root}/vms/{incoming_vm}/disk.raw",
            incoming=True,
        ),
    ]  # fmt: skip
    st = make_state(tmp_path)
    st.reconcile([declared(root, [])])  # materialise the pool
    write(root / "vms" / owned_vm / "disk.qcow2")
    write(root / "vms" / incoming_vm / "disk.raw")  # a move is bringing it in
    write(root / "vms" / orphan_vm / "disk.qcow2", b"o" * 4096)
    write(root / "vms" / junk_vm / "notes.txt")  # a VM directory with no disk
    write(root / "vms" / "loose-file")
    write(root / "images" / "debian.qcow2", b"img")
    write(root / "images" / "debian.qcow2.sha256", b"a" * 64)
    write(root / "images" / "lost.qcow2.sha256", b"b" * 64)  # a sidecar without its image
    write(root / "images" / "young.qcow2", old=False)  # not committed yet: in the grace period
    write(root / "scratch" / "old.tmp")
    write(root / "scratch" / "young.tmp", old=False)
    outside = write(tmp_path / "outside" / "secret" / "disk.qcow2")
    os.symlink(outside.parent, root / "vms" / "link-out")

    st.reconcile([declared(root, disks)])

    assert drift_paths(st) == {
        f"vms/{orphan_vm}/disk.qcow2": "orphan",
        f"vms/{junk_vm}": "orphan",
        "vms/loose-file": "orphan",
        "vms/link-out": "orphan",
        "images/lost.qcow2.sha256": "stray",
        "scratch/old.tmp": "stray",
    }
    rep = report(st)
    assert rep.missing_disks == ["d-gone"]  # missing disks stay where they were reported
    assert rep.drift is not None
    items = {i.path: i for i in rep.drift.items}
    assert items[f"vms/{orphan_vm}/disk.qcow2"].size_bytes == 4096
    assert items["vms/link-out"].type == "symlink"  # never followed out of the pool
    assert not any("secret" in p for p in items)


def test_a_busy_scratch_file_is_never_stray(tmp_path: Path) -> None:
    root = tmp_path / "pool"
    st = make_state(tmp_path)
    st.reconcile([declared(root, [])])
    busy = write(root / "scratch" / "dl.tmp")
    write(root / "scratch" / "left.tmp")
    st.set_scratch(lambda p: p == os.path.realpath(busy), st._protected)
    st.refresh_images()
    assert drift_paths(st) == {"scratch/left.tmp": "stray"}


def test_a_vm_task_under_way_owns_its_directory(tmp_path: Path) -> None:
    root = tmp_path / "pool"
    vm = str(uuid.uuid4())
    st = make_state(tmp_path)
    st.reconcile([declared(root, [])])
    write(root / "vms" / vm / "disk.qcow2")
    task = AgentTask(id="t1", type="vm.create", args={"vm_id": vm})
    st.reconcile([declared(root, [])], [task])
    st.refresh_images()
    assert drift_paths(st) == {}
    st.reconcile([declared(root, [])], [])
    st.refresh_images()
    assert drift_paths(st) == {f"vms/{vm}/disk.qcow2": "orphan"}


def test_purge_rechecks_each_path_and_never_removes_what_became_owned(tmp_path: Path) -> None:
    root = tmp_path / "pool"
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    st = make_state(tmp_path)
    st.reconcile([declared(root, [])])
    disk_a = write(root / "vms" / a / "disk.qcow2")
    write(root / "vms" / b / "disk.raw")
    write(root / "scratch" / "old.tmp")
    outside = write(tmp_path / "outside.img")
    os.symlink(outside, root / "images" / "link.img")
    os.utime(root / "images" / "link.img", (OLD, OLD), follow_symlinks=False)
    st.refresh_images()
    seen = sorted(drift_paths(st))
    assert seen == sorted(
        [
            "images/link.img",
            "scratch/old.tmp",
            f"vms/{a}/disk.qcow2",
            f"vms/{b}/disk.raw",
        ]
    )

    # between doctor and purge the control plane comes to own a's disk
    owned = DeclaredDisk(id="d-a", vm_id=a, file_path=f"{root}/vms/{a}/disk.qcow2")
    st.reconcile([declared(root, [owned])])
    task = AgentTask(
        id="p1", type=DRIFT_PURGE, args={"pool": "fast", "paths": [*seen, "vms/never-there"]}
    )
    update = execute(st, task, NOW, st)

    assert update.status == "success", update.error
    result = update.result or {}
    assert sorted(r["path"] for r in result["removed"]) == sorted([
        "images/link.img", "scratch/old.tmp", f"vms/{b}/disk.raw",
    ])  # fmt: skip
    assert {k["path"]: k["reason"] for k in result["kept"]} == {
        f"vms/{a}/disk.qcow2": "owned",
        "vms/never-there": "not_drift",
    }
    assert disk_a.read_bytes() == b"x" * 1000  # the owned disk is untouched
    assert outside.exists()  # the link went, never its target
    assert not (root / "vms" / b).exists()  # the emptied VM directory went too
    assert sorted(os.listdir(root / "scratch")) == []  # nothing left in the trash
    assert drift_paths(st) == {}


def test_import_adopts_an_orphan_by_rename_and_refuses_what_is_not_one(tmp_path: Path) -> None:
    root = tmp_path / "pool"
    orphan_dir, new_vm = str(uuid.uuid4()), str(uuid.uuid4())
    st = make_state(tmp_path)
    st.reconcile([declared(root, [])])
    src = qcow2(root / "vms" / orphan_dir / "disk.qcow2")
    os.utime(src, (OLD, OLD))
    inode = os.stat(src).st_ino
    args = {"vm_id": new_vm, "pool": "fast", "path": str(root)}

    refused = execute(
        st, AgentTask(id="i0", type=VM_IMPORT, args={**args, "source": "vms/nope"}), NOW, st
    )
    assert refused.status == "failed"
    assert (refused.error or {})["code"] == "disk_not_orphan"

    task = AgentTask(
        id="i1", type=VM_IMPORT, args={**args, "source": f"vms/{orphan_dir}/disk.qcow2"}
    )
    done = execute(st, task, NOW, st)
    assert done.status == "success", done.error
    result = done.result or {}
    assert result["format"] == "qcow2"
    assert result["virtual_size_bytes"] == 1 << 20
    assert result["file_path"] == f"{root}/vms/{new_vm}/disk.qcow2"
    assert os.stat(root / "vms" / new_vm / "disk.qcow2").st_ino == inode  # a rename, no copy
    assert not (root / "vms" / orphan_dir).exists()
    # a re-run (a lost report, an agent restart) finds it adopted and says so again
    again = execute(st, task, NOW, st)
    assert again.status == "success"
    assert (again.result or {})["file_path"] == result["file_path"]


def test_import_refuses_a_disk_backed_by_a_file_outside_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "pool"
    st = make_state(tmp_path)
    st.reconcile([declared(root, [])])
    base = qcow2(tmp_path / "base.qcow2")
    orphan = root / "vms" / "old" / "disk.qcow2"
    orphan.parent.mkdir(parents=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(orphan)],
        check=True,
    )
    os.utime(orphan, (OLD, OLD))
    args = {"vm_id": str(uuid.uuid4()), "pool": "fast", "source": "vms/old/disk.qcow2"}
    update = execute(st, AgentTask(id="i2", type=VM_IMPORT, args=args), NOW, st)
    assert update.status == "failed"
    assert (update.error or {})["code"] == "disk_backing_outside_pool"
    assert orphan.exists()  # the orphan is never lost


def test_scan_lists_at_most_the_bound_and_counts_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "pool"
    st = make_state(tmp_path)
    st.reconcile([declared(root, [])])
    for i in range(MAX_ITEMS + 5):
        write(root / "scratch" / f"f{i:04d}.tmp", b"")
    found = drift.scan(root, Owned(), busy=lambda _p: False)
    assert len(found.items) == MAX_ITEMS
    assert found.more == 5


def test_another_pools_root_inside_vms_is_never_drift(tmp_path: Path) -> None:
    root = tmp_path / "pool"
    st = make_state(tmp_path)
    st.reconcile([declared(root, [])])
    nested = root / "vms" / "nested"
    write(nested / "disk.qcow2")  # rows from before the one-directory-one-pool rule
    outer = declared(root, []).model_copy(update={"created_at": NOW - timedelta(days=1)})
    inner = declared(nested, []).model_copy(update={"name": "inner", "created_at": NOW})
    st.reconcile([outer, inner])  # the later, inner one fails (overlap); its root stays its own
    assert drift_paths(st) == {}
    task = AgentTask(id="p2", type=DRIFT_PURGE, args={"pool": "fast", "paths": ["vms/nested"]})
    update = execute(st, task, NOW, st)
    assert (update.result or {})["kept"] == [{"path": "vms/nested", "reason": "not_drift"}]
    assert (nested / "disk.qcow2").exists()


def test_a_drift_change_changes_the_digest_so_the_next_heartbeat_carries_it(
    tmp_path: Path,
) -> None:
    root = tmp_path / "pool"
    st = make_state(tmp_path)
    st.reconcile([declared(root, [])])
    before = st.digest
    assert st.reconcile([declared(root, [])]) is False  # nothing moved: nothing to send
    write(root / "scratch" / "old.tmp")
    assert st.reconcile([declared(root, [])]) is True
    assert st.digest != before
    legacy = declared(root, []).model_copy(update={"id": ""})
    st2 = make_state(tmp_path / "other")
    st2.reconcile([legacy.model_copy(update={"path": str(tmp_path / "other" / "p")})])
    assert report(st2).drift is None  # an older control plane: ownership unknown


def test_import_accepts_a_disk_backed_by_an_image_of_the_pools_cache(tmp_path: Path) -> None:
    root = tmp_path / "pool"
    st = make_state(tmp_path)
    st.reconcile([declared(root, [])])
    base = qcow2(root / "images" / "base.qcow2", "3M")
    (root / "images" / "base.qcow2.sha256").write_text("a" * 64)
    orphan = root / "vms" / "old" / "disk.qcow2"
    orphan.parent.mkdir()
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "../../images/base.qcow2",
         "-F", "qcow2", str(orphan)],
        check=True,
    )  # fmt: skip
    os.utime(orphan, (OLD, OLD))
    vm = str(uuid.uuid4())
    args = {"vm_id": vm, "pool": "fast", "source": "vms/old/disk.qcow2"}
    update = execute(st, AgentTask(id="i3", type=VM_IMPORT, args=args), NOW, st)
    assert update.status == "success", update.error
    assert (update.result or {})["virtual_size_bytes"] == 3 << 20
    assert (root / "vms" / vm / "disk.qcow2").exists()
    assert base.exists()

"""After ``otherix-api restore`` to an older point (issue 17.3) the control plane stops
declaring what it made after the backup: a VM disk whose row is gone, or a whole pool.
The agent deletes neither: the disk stays byte for byte and shows as an orphan in the
pool's drift report (for an admin to adopt or purge); an undeclared pool is only
unregistered, its directory left as it was. Real pool directories, no store."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

from otherix.agent.fs import ProtectedRoots
from otherix.agent.pools import PoolReconciler
from otherix.agent.report import PoolState
from otherix.models.heartbeat import DeclaredDisk, DeclaredPool

CLUSTER = str(uuid.uuid4())
OLD = time.time() - 2 * 3600  # past the one-hour grace period of drift


def declared(root: Path, disks: list[DeclaredDisk]) -> DeclaredPool:
    return DeclaredPool(
        name="fast",
        type="local_dir",
        path=str(root),
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, str(root))),
        cluster_id=CLUSTER,
        marker_id="m-1",
        disks=disks,
    )


def make_state(tmp_path: Path) -> PoolState:
    protected = ProtectedRoots()
    st = PoolState(
        PoolReconciler(protected=protected), allowed_prefixes=[f"{tmp_path}/"], usage_interval=0
    )
    st.set_scratch(lambda _p: False, protected)
    return st


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its sha256 (the pool's own bookkeeping aside)."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_a_vm_the_restored_store_does_not_know_keeps_its_disk_and_shows_as_an_orphan(
    tmp_path: Path,
) -> None:
    root = tmp_path / "pool"
    kept_vm, newer_vm = str(uuid.uuid4()), str(uuid.uuid4())
    disks = {
        vm: DeclaredDisk(id=f"d-{vm[:4]}", vm_id=vm, file_path=f"{root}/vms/{vm}/disk.raw")
        for vm in (kept_vm, newer_vm)
    }
    st = make_state(tmp_path)
    st.reconcile([declared(root, list(disks.values()))])  # before: both VMs declared
    for vm in disks:
        disk = root / "vms" / vm / "disk.raw"
        disk.parent.mkdir(parents=True)
        disk.write_bytes(vm.encode() * 1000)
        os.utime(disk, (OLD, OLD))
    before = tree(root / "vms")

    for _ in range(3):  # after the restore: the newer VM's row is gone
        st.reconcile([declared(root, [disks[kept_vm]])])

    assert tree(root / "vms") == before
    rep = next(r for r in st.reports if r.name == "fast")
    assert rep.drift is not None
    assert {i.path: i.kind for i in rep.drift.items} == {f"vms/{newer_vm}/disk.raw": "orphan"}
    assert rep.missing_disks == []


def test_a_pool_the_restored_store_does_not_know_is_left_on_disk(tmp_path: Path) -> None:
    root = tmp_path / "pool"
    vm = str(uuid.uuid4())
    disk = DeclaredDisk(id="d-1", vm_id=vm, file_path=f"{root}/vms/{vm}/disk.raw")
    st = make_state(tmp_path)
    st.reconcile([declared(root, [disk])])
    (root / "vms" / vm).mkdir(parents=True)
    (root / "vms" / vm / "disk.raw").write_bytes(b"d" * 4096)
    before = tree(root)

    for _ in range(3):  # the restored store declares no pool on this node
        st.reconcile([])

    assert tree(root) == before
    assert not any(r.name == "fast" for r in st.reports)  # unregistered, nothing removed

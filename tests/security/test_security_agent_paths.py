"""Path tricks against the agent, through the code it runs as root.

Pools go through ``PoolState`` (the agent's allowlist, then the reconciler's
symlink checks), VM disks through ``materialise_disk``/``remove_disk``. Each
trick puts a symlink or a ``..`` where a write would land outside the allowed
prefix (``{tmp}/pools/``); each must be refused, and afterwards the directory
outside (``{tmp}/outside``, holding a "secret") is byte for byte and mode for
mode what it was.
"""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest

from otherix.agent.fs import ProtectedRoots
from otherix.agent.images import (
    ImageError,
    KeyedLocks,
    ScratchArea,
    materialise_disk,
    remove_disk,
)
from otherix.agent.pools import PoolReconciler
from otherix.agent.report import PoolState
from otherix.models.heartbeat import DeclaredPool

pytestmark = pytest.mark.security


def tree(root: Path) -> dict[str, tuple[int, bytes | str | None]]:
    """Every entry under ``root``: mode and content (file), target (link) or None (dir)."""
    out: dict[str, tuple[int, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[str(path)] = (st.st_mode, os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                out[str(path)] = (st.st_mode, path.read_bytes())
            else:
                out[str(path)] = (st.st_mode, None)
    out[str(root)] = (os.lstat(root).st_mode, None)
    return out


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    (tmp_path / "pools").mkdir()
    outside = tmp_path / "outside"
    (outside / "etc").mkdir(parents=True, mode=0o700)
    (outside / "etc" / "secret").write_bytes(b"do not touch")
    return tmp_path


def pool_tricks(t: Path) -> list[tuple[str, str, str]]:
    """(what, declared path, expected error fragment); sets up the links it needs."""
    pools, outside = t / "pools", t / "outside"
    (pools / "evil").symlink_to(outside)
    (pools / "alias").symlink_to(outside / "etc")
    (pools / "dangling").symlink_to(outside / "new")
    (pools / "real" / "deeper").mkdir(parents=True)
    (pools / "real" / "deeper" / "hop").symlink_to(outside)
    (pools / "inner").mkdir()
    (pools / "inner-link").symlink_to(pools / "inner")
    for sub in ("images", "scratch", "vms"):
        (pools / f"sub-{sub}").mkdir()
        (pools / f"sub-{sub}" / sub).symlink_to(outside / "etc")
    (t / "linked-prefix").symlink_to(outside)
    escape = "is a symlink that escapes the pool"
    return [
        (
            "symlinked directory in the prefix, pool below it",
            f"{pools}/evil/p",
            "traverses a symlink",
        ),
        ("pool root is a symlink to outside", f"{pools}/alias", escape),
        ("pool root is a dangling symlink to outside", f"{pools}/dangling", escape),
        ("symlink two levels down", f"{pools}/real/deeper/hop/p", "traverses a symlink"),
        ("symlink to a sibling inside the prefix", f"{pools}/inner-link/p", "traverses a symlink"),
        ("images/ is a symlink to outside", f"{pools}/sub-images", escape),
        ("scratch/ is a symlink to outside", f"{pools}/sub-scratch", escape),
        ("vms/ is a symlink to outside", f"{pools}/sub-vms", escape),
        (".. out of the prefix", f"{pools}/../outside/p", "allowed path prefixes"),
        (".. out and back in through a link", f"{pools}/x/../evil/p", '".." segment'),
        ("a sibling of the prefix", f"{t}/pools-evil/p", "allowed path prefixes"),
        ("a prefix spelled through a link", f"{t}/linked-prefix/p", "allowed path prefixes"),
    ]


def test_pool_path_tricks_are_refused_and_nothing_outside_changes(sandbox, reliability):
    tricks = pool_tricks(sandbox)
    outside_before = tree(sandbox / "outside")
    state = PoolState(
        PoolReconciler(protected=ProtectedRoots()), allowed_prefixes=[f"{sandbox}/pools/"]
    )
    declared = [
        DeclaredPool(name=f"p{i}", type="local_dir", path=p) for i, (_, p, _) in enumerate(tricks)
    ]
    state.reconcile(declared)
    reports = {r.name: r for r in state.reports}
    refused = 0
    for i, (what, path, fragment) in enumerate(tricks):
        report = reports[f"p{i}"]
        assert report.reconciliation_status == "failed", (what, path, report)
        assert fragment in (report.reconciliation_error or ""), (what, report.reconciliation_error)
        refused += 1
    outside_after = tree(sandbox / "outside")
    changed = {
        k
        for k in outside_before.keys() | outside_after.keys()
        if outside_before.get(k) != outside_after.get(k)
    }
    reliability.record(
        "agent: symlink and .. tricks on pool paths",
        injected=len(tricks),
        survived=refused,
        checked=len(outside_after),
        lost=len(changed),
        detail="pools declared through PoolState with an allowlist; entries outside compared",
    )
    assert not changed, changed
    assert not (sandbox / "outside" / "new").exists()


@pytest.fixture
def pool(sandbox: Path) -> Path:
    root = sandbox / "pools" / "good"
    for sub in ("images", "scratch", "vms"):
        (root / sub).mkdir(parents=True)
    (root / "images" / "base.raw").write_bytes(os.urandom(64 * 1024))
    return root


def test_vm_disk_tricks_are_refused_and_nothing_outside_changes(sandbox, pool, reliability):
    outside = sandbox / "outside"
    (outside / "vmdir").mkdir()
    (outside / "vmdir" / "keep").write_bytes(b"keep")
    before = tree(outside)
    vm_link, vm_rm = str(uuid.uuid4()), str(uuid.uuid4())
    (pool / "vms" / vm_link).symlink_to(outside / "vmdir")
    (pool / "vms" / vm_rm).symlink_to(outside / "vmdir")
    (pool / "images" / "secret.raw").symlink_to(outside / "etc" / "secret")
    protected, locks = ProtectedRoots(), KeyedLocks()
    area = ScratchArea(protected)

    def clone(vm_id: str, image: str) -> None:  # a raw clone, as the agent makes one
        materialise_disk(
            pool,
            vm_id,
            pool / "images" / image,
            "raw",
            0,
            scratch_area=area,
            locks=locks,
            protected=protected,
        )

    attempts = 0
    attempts += 1
    with pytest.raises(ImageError) as err:  # the VM's directory leads outside
        clone(vm_link, "base.raw")
    assert err.value.code == "clone_failed"
    attempts += 1
    with pytest.raises(ImageError) as err:  # the "image" is a link to a host file
        clone(str(uuid.uuid4()), "secret.raw")
    assert err.value.code == "image_unavailable"
    attempts += 1
    with pytest.raises(ValueError, match="must be a UUID"):  # a VM id that is a path
        clone("../../outside/etc", "base.raw")
    attempts += 1
    removed = remove_disk(pool, vm_rm, locks=locks, protected=protected)
    assert removed is True  # removes the link, not what it points to
    assert not os.path.lexists(pool / "vms" / vm_rm)
    after = tree(outside)
    reliability.record(
        "agent: symlink tricks on VM disks",
        injected=attempts,
        survived=attempts,
        checked=len(after),
        lost=sum(before.get(k) != after.get(k) for k in before.keys() | after.keys()),
        detail="vms/{id} linked outside (create, remove), image linked to a host file, id '../..'",
    )
    assert after == before
    assert sorted(os.listdir(pool / "scratch")) == []

"""The agent's composition root (``otherix.agent.main.build_pools``): one process,
one set of protected pool roots and one lock table, shared by the pool reconciler
and the image cache, so the data-safety rule holds as the running agent wires it.

Real directories, the real reconciler and cache; no doubles.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from otherix.agent import vmwork
from otherix.agent.images import ImageError
from otherix.agent.main import build_pools
from otherix.agent.settings import AgentSettings, StorageSection
from otherix.models.heartbeat import DeclaredPool

CLUSTER = str(uuid.uuid4())
T0 = datetime(2027, 1, 1, tzinfo=UTC)


def declared(name: str, root: Path, minutes: int) -> DeclaredPool:
    return DeclaredPool(
        name=name,
        type="local_dir",
        path=str(root),
        id=str(uuid.uuid4()),
        cluster_id=CLUSTER,
        created_at=T0 + timedelta(minutes=minutes),
        identity="create",
        marker_id=str(uuid.uuid4()),
    )


def settings(tmp_path: Path) -> AgentSettings:
    return AgentSettings(
        data_dir=tmp_path / "agent",
        storage=StorageSection(allowed_path_prefixes=[f"{tmp_path}/pools/"]),
    )


def test_the_cache_sweep_sees_the_roots_the_reconciler_declared(tmp_path: Path) -> None:
    (tmp_path / "agent").mkdir()
    pools, cache = build_pools(settings(tmp_path))
    outer_root = tmp_path / "pools" / "outer"
    outer = declared("outer", outer_root, 0)
    inner = declared("inner", outer_root / "scratch", 5)  # a row from before the overlap rule
    pools.reconcile([outer])
    (outer_root / "scratch" / "vms").mkdir()
    (outer_root / "scratch" / "vms" / "disk.qcow2").write_text("inner's disk")
    (outer_root / "scratch" / "leftover.tmp").write_text("x")
    pools.reconcile([outer, inner])
    assert cache.sweep_scratch(outer_root) == []
    assert (outer_root / "scratch" / "vms" / "disk.qcow2").read_text() == "inner's disk"
    pools.reconcile([outer])  # the inner pool is gone: its directory is scratch again
    assert sorted(cache.sweep_scratch(outer_root)) == ["scratch/leftover.tmp", "scratch/vms"]


def test_a_vm_delete_task_never_removes_another_pools_root(tmp_path: Path) -> None:
    (tmp_path / "agent").mkdir()
    pools, cache = build_pools(settings(tmp_path))
    vm = str(uuid.uuid4())
    outer_root = tmp_path / "pools" / "outer"
    outer = declared("outer", outer_root, 0)
    inner = declared("inner", outer_root / "vms" / vm / "inner", 5)
    pools.reconcile([outer])
    (outer_root / "vms" / vm / "inner" / "vms").mkdir(parents=True)
    (outer_root / "vms" / vm / "inner" / "vms" / "data").write_text("inner's")
    pools.reconcile([outer, inner])
    args = vmwork.DeleteArgs(vm_id=vm, pool_name="outer", pool_path=str(outer_root))
    with pytest.raises(ImageError, match="root of another pool"):
        vmwork.delete(cache, pools, args)
    assert (outer_root / "vms" / vm / "inner" / "vms" / "data").read_text() == "inner's"
    pools.reconcile([outer])
    assert vmwork.delete(cache, pools, args) == {"vm_id": vm, "removed": True}
    assert not (outer_root / "vms" / vm).exists()

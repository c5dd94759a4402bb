"""The agent's side of ``vm move`` (``otherix.agent.vmmove`` and its lane in
``otherix.agent.vmtasks``): copy, sha256 compare and publish into the target pool; a
re-run that finds its own copy, a stale copy replaced, a missing source; the removal of
a copy a move left behind, refused while the pool declares the VM's disk or the kept copy
is missing; progress phases and a cancel through the task workers.

Real pools (two directories registered in a real ``PoolState``), real qcow2 disks made
with ``qemu-img``, reports through a real ``TaskOutbox`` to a spy.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from otherix.agent import vmmove
from otherix.agent.fs import ProtectedRoots
from otherix.agent.images import ImageCache, KeyedLocks, ScratchArea
from otherix.agent.outbox import TaskOutbox
from otherix.agent.pools import PoolReconciler
from otherix.agent.report import PoolState
from otherix.agent.vmtasks import VmTasks
from otherix.agent.vmwork import TaskFailure
from otherix.models.heartbeat import AgentTask, DeclaredDisk, DeclaredPool, TaskUpdate
from support.reporters import SpyReporter

A, B = "/var/lib/otherix/pools/mva", "/var/lib/otherix/pools/mvb"
MiB = 1 << 20


class Cache:
    """What the move needs of the image cache: its locks, scratch area, protected roots."""

    def __init__(self, protected: ProtectedRoots) -> None:
        self.protected = protected
        self.locks = KeyedLocks()
        self.scratch = ScratchArea(protected)


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.host_root = tmp_path / "host"
        protected = ProtectedRoots()
        self.pools = PoolState(
            PoolReconciler(protected=protected),
            allowed_prefixes=["/var/lib/otherix/pools/"],
            host_root=self.host_root,
        )
        self.vm = str(uuid.uuid4())
        self.declare()
        self.cache = cast(ImageCache, Cache(protected))
        self.a = Path(str(self.host_root) + A)
        self.b = Path(str(self.host_root) + B)
        self.src = self.a / "vms" / self.vm / "disk.qcow2"
        self.dst = self.b / "vms" / self.vm / "disk.qcow2"
        self.src.parent.mkdir(parents=True)
        raw = tmp_path / "data.raw"
        raw.write_bytes(bytes(range(256)) * (12 * MiB // 256))
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(self.src)],
            check=True,
            timeout=60,
        )
        self.sha = digest(self.src)
        self.reporter = SpyReporter()
        self.outbox = TaskOutbox(self.reporter, "n1", interval=0.0)
        self.vms: VmTasks | None = None

    def declare(self, *, on_a: bool = True, incoming_b: bool = True) -> None:
        """The pools as the control plane declares them during (or after) a move."""
        disk_a = DeclaredDisk(id="d1", vm_id=self.vm, file_path=f"{A}/vms/{self.vm}/disk.qcow2")
        disk_b = DeclaredDisk(
            id="d1", vm_id=self.vm, file_path=f"{B}/vms/{self.vm}/disk.qcow2", incoming=incoming_b
        )
        self.pools.reconcile(
            [
                DeclaredPool(name="mva", type="local_dir", path=A, disks=[disk_a] if on_a else []),
                DeclaredPool(name="mvb", type="local_dir", path=B, disks=[disk_b]),
            ]
        )

    def args(self, **over: Any) -> dict[str, Any]:
        return {
            "vm_id": self.vm,
            "format": "qcow2",
            "source": {"pool_name": "mva", "pool_path": A},
            "target": {"pool_name": "mvb", "pool_path": B},
            **over,
        }

    def move(self, **kw: Any) -> dict[str, Any]:
        return vmmove.move(self.cache, self.pools, vmmove.MoveArgs.parse(self.args()), **kw)

    def outcome(self, task_id: str, timeout: float = 20.0) -> TaskUpdate:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.outbox.pump()
            final = [u for u in self.reporter.of(task_id) if u.status != "running"]
            if final:
                return final[-1]
            time.sleep(0.01)
        raise AssertionError(f"no outcome for {task_id}: {self.reporter.of(task_id)}")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    if e.vms is not None:
        e.vms.close()


def test_a_move_copies_verifies_and_publishes_and_leaves_the_source(env: Env) -> None:
    seen: list[tuple[str, int, int]] = []
    result = env.move(progress=lambda phase, done, total: seen.append((phase, done, total)))
    assert digest(env.dst) == digest(env.src) == env.sha == result["sha256"]
    assert result["method"] in ("copy", "reflink")
    assert result["file_path"] == f"{B}/vms/{env.vm}/disk.qcow2"
    assert result["bytes"] == env.src.stat().st_size
    assert list(env.b.joinpath("scratch").iterdir()) == []
    phases = [p for p, _, _ in seen]
    assert phases.index("source") < phases.index("copy") < phases.index("verify")
    assert all(done <= total for _, done, total in seen)
    # run again (an agent killed after publishing): its own copy is the result
    again = env.move()
    assert (again["method"], again["sha256"]) == ("existing", env.sha)


def test_a_stale_copy_in_the_target_is_replaced_by_a_verified_one(env: Env) -> None:
    env.dst.parent.mkdir(parents=True)
    env.dst.write_bytes(b"an older copy of something else")
    result = env.move()
    assert result["method"] in ("copy", "reflink")
    assert digest(env.dst) == env.sha


def test_a_missing_source_fails_and_leaves_the_target_alone(env: Env) -> None:
    env.dst.parent.mkdir(parents=True)
    env.dst.write_bytes(b"whatever is there")
    env.src.unlink()
    with pytest.raises(TaskFailure) as exc:
        env.move()
    assert exc.value.code == "disk_missing"
    assert env.dst.read_bytes() == b"whatever is there"


def test_the_same_pool_twice_is_refused(env: Env) -> None:
    args = env.args(target={"pool_name": "mva", "pool_path": A})
    with pytest.raises(TaskFailure) as exc:
        vmmove.move(env.cache, env.pools, vmmove.MoveArgs.parse(args))
    assert exc.value.code == "validation_failed"
    assert digest(env.src) == env.sha


def remove_args(env: Env, pool: str, path: str, keep: tuple[str, str] | None) -> Any:
    raw: dict[str, Any] = {"vm_id": env.vm, "format": "qcow2", "pool_name": pool,
                           "pool_path": path}  # fmt: skip
    raw["keep"] = {"pool_name": keep[0], "pool_path": keep[1]} if keep else None
    return vmmove.RemoveArgs.parse(raw)


def test_a_left_copy_is_removed_only_when_nothing_owns_it(env: Env) -> None:
    env.move()
    source = remove_args(env, "mva", A, ("mvb", B))
    # the source pool still declares the VM's disk (the switch not seen yet): kept
    with pytest.raises(TaskFailure) as exc:
        vmmove.remove_copy(env.cache, env.pools, env.pools, source)
    assert exc.value.code == "disk_owned"
    assert env.src.exists()
    # switched: the source no longer declares it, the target does
    env.declare(on_a=False, incoming_b=False)
    env.dst.rename(env.dst.with_name("away"))  # but the kept copy is not there
    with pytest.raises(TaskFailure) as exc:
        vmmove.remove_copy(env.cache, env.pools, env.pools, source)
    assert exc.value.code == "keep_missing"
    assert env.src.exists()
    env.dst.with_name("away").rename(env.dst)
    assert vmmove.remove_copy(env.cache, env.pools, env.pools, source)["removed"] is True
    assert not env.src.parent.exists()
    assert digest(env.dst) == env.sha
    again = vmmove.remove_copy(env.cache, env.pools, env.pools, source)
    assert again["removed"] is False  # idempotent
    # the target's copy, declared (not incoming any more), is never removed
    target = remove_args(env, "mvb", B, None)
    with pytest.raises(TaskFailure) as exc:
        vmmove.remove_copy(env.cache, env.pools, env.pools, target)
    assert exc.value.code == "disk_owned"
    assert digest(env.dst) == env.sha


def test_the_move_lane_reports_phases_and_a_cancel_leaves_no_copy(env: Env) -> None:
    vms = VmTasks(
        cache=env.cache,
        pools=env.pools,
        outbox=env.outbox,
        retry_delay=0.0,
        ownership=env.pools,
        move_max_bytes_per_second=4 * MiB,  # about 8 s for this disk: time to cancel
    )
    env.vms = vms
    task = AgentTask(id=str(uuid.uuid4()), type="vm.move", args=env.args())
    assert vms.submit(task)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        env.outbox.pump()
        phases = {(u.result or {}).get("phase") for u in env.reporter.of(task.id)}
        if "copy" in phases:
            break
        time.sleep(0.02)
    assert "copy" in phases, env.reporter.of(task.id)
    vms.forget(set())  # the control plane dropped it (cancelled): the copy stops
    scratch = env.b / "scratch"
    wait = time.monotonic() + 5  # well before the ~8 s the whole copy would take
    while list(scratch.iterdir()) and time.monotonic() < wait:
        time.sleep(0.02)
    assert list(scratch.iterdir()) == []
    assert not env.dst.exists()
    assert digest(env.src) == env.sha
    # and a move that runs to the end reports its result
    fast = VmTasks(cache=env.cache, pools=env.pools, outbox=env.outbox, ownership=env.pools)
    try:
        done = AgentTask(id=str(uuid.uuid4()), type="vm.move", args=env.args())
        fast.submit(done)
        outcome = env.outcome(done.id)
        assert outcome.status == "success", outcome
        assert (outcome.result or {})["sha256"] == env.sha
        running = [u for u in env.reporter.of(done.id) if u.status == "running"]
        assert max(u.progress for u in running) <= 99
    finally:
        fast.close()

"""``kill -9`` of a real ``otherix-agent`` at a dozen points of a ``vm move``, and a move
refused for want of room (issue 16, deliverable 5, "bad input and faults").

One node (its own mount namespace, as root) and a control plane from the harness. Every
pool is a tmpfs of its own mounted on the HOST under ``/tmp/otx-mvf-*/`` before the agent
starts, so the agent sees the host's path unchanged and the bytes outlive every kill; the
control plane's ``storage_pools.allowed_path_prefixes`` (handed to the agent by the
harness) allows that prefix. The agent reads disks at ``tasks.move_max_bytes_per_second``
(16 MiB/s on a 24 MiB qcow2: about 1.5 s for each of ``source``, ``copy`` and ``verify``),
so each kill point is reached by observation, not by a timer:

pending (the agent is down when the move is admitted), received (the task's first
``running`` report), ``source`` at 25/50/75 % of the bytes hashed (the task's progress
result), ``copy`` at 25/50/75 % (the size of the target's ``scratch/move-*`` temp),
``verify`` half way (progress), the final ``vms/{vm}/disk.qcow2`` just published in the
target (the filesystem), the switch just visible on the API (the VM's pool is the
target), and the source copy just gone (the filesystem).

One VM goes back and forth between two pools. After each kill the agent is started again
and must converge: the move task final; the VM ``stopped`` on the target if the task
succeeded, else on the source with ``status.reason: move_failed``; the follow-up
``vm.disk_remove`` done; exactly one ``vms/{vm}/disk.qcow2`` across the two pools, its
sha256 the original's; no ``scratch/move-*`` temp left after the agent's start sweep. A
thread polls the VM all along: at no observation may it name a disk file that does not
exist, or be reported missing.

Bad input: a target tmpfs smaller than the disk is refused at admission
(``vm_not_movable``, reason ``insufficient_space``; nothing copied), and a target whose
reported room went stale (filled from the host just after admission) fails on the agent's
own room check, the VM stopped on its source with ``move_failed``, nothing left behind.
"""

from __future__ import annotations

import hashlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from movehelpers import (
    AGENT_CONFIG,
    DISK_MIB,
    RATE,
    MiB,
    TmpfsPool,
    Watcher,
    check_at_kill,
    check_no_leftovers,
    check_task_and_vm,
    copying,
    file_sha,
    get_task,
    host_tmpfs,
    poll,
    published,
    task_progress,
    verifying,
    wait_task,
)

from support import clustervms
from support.clustervms import create_vm, get_vm, wait_phase
from support.harness import FAST, MOUNT_NS_AVAILABLE, NODE_ROOT, AgentProc, Cluster
from support.images import ImageOrigin, qcow2

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(not MOUNT_NS_AVAILABLE, reason="needs root, unshare and mount"),
]

#: one tmpfs per pool, mounted on the host before the agent starts
TMPFS_MIB = {"mva": 160, "mvb": 160, "home": 96, "tiny": 8, "stale": 48}


@dataclass
class Env:
    cluster: Cluster
    node: AgentProc
    origin: ImageOrigin
    base: Path
    pools: dict[str, TmpfsPool]
    image: bytes


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("mvf")
    with host_tmpfs("otx-mvf-", TMPFS_MIB) as base:
        overrides = {
            **FAST,
            "storage_pools.allowed_path_prefixes": [f"{NODE_ROOT}/pools/", f"{base}/"],
        }
        image = qcow2(tmp, "mv.qcow2", data_mib=DISK_MIB)
        with (
            ImageOrigin() as origin,
            clustervms.one_node(tmp, overrides=overrides, agent_config=AGENT_CONFIG) as (
                cluster,
                node,
            ),
        ):
            assert node.mount_ns
            pools = {n: TmpfsPool(cluster, node, n, base / n) for n in TMPFS_MIB}
            yield Env(cluster, node, origin, base, pools, image)


@pytest.fixture
def node(env: Env) -> AgentProc:
    if not env.node.alive:
        env.node.start()
    return env.node


def make_vm(env: Env, name: str, pool: TmpfsPool) -> tuple[str, str]:
    """A stopped VM on ``pool`` from the module's image: (its id, its disk's sha256)."""
    url = env.origin.serve(f"/img/{name}.qcow2", env.image)
    vm = create_vm(env.cluster, name, pool, url, power_state="stopped")
    wait_phase(env.cluster, name, "stopped", timeout=60)
    sha = file_sha(pool.disk(vm["id"]))
    assert sha == hashlib.sha256(env.image).hexdigest()  # a full copy of the image
    return vm["id"], sha


# -- kill points ---------------------------------------------------------------------------


@dataclass
class Move:
    """One move of the VM and what the kill point may look at."""

    env: Env
    vm: str
    vm_id: str
    src: TmpfsPool
    dst: TmpfsPool
    size: int
    task_id: str = ""

    def task(self) -> dict[str, Any]:
        return get_task(self.env.cluster, self.task_id)

    def progress(self, phase: str, fraction: float) -> str | None:
        return task_progress(self.task(), phase, fraction)


@dataclass
class Kill:
    label: str
    #: called while the move runs: what it saw when the point is reached, else None
    reached: Callable[[Move], str | None] | None
    #: the point lies before the copy is published (nothing final in the target yet)
    before_publish: bool = False
    #: a copy point: its scratch temp must still be there after the kill (for the sweep)
    leaves_temp: bool = False
    #: seconds between looks (the filesystem's points are short and cheap to look at)
    interval: float = 0.02
    seen: str = ""
    outcome: str = ""
    method: str = ""
    converged: bool = False
    problems: list[str] = field(default_factory=list)


def received(m: Move) -> str | None:
    t = m.task()
    return f"running, result {t.get('result')}" if t["status"] == "running" else None


def hashing(fraction: float) -> Callable[[Move], str | None]:
    return lambda m: m.progress("source", fraction)


def switched(m: Move) -> str | None:
    if get_vm(m.env.cluster, m.vm)["pool_id"] != m.dst.id:
        return None
    return f"switched; source copy {'still there' if m.src.disk(m.vm_id).exists() else 'gone'}"


def source_removed(m: Move) -> str | None:
    return None if m.src.disk(m.vm_id).exists() else "source copy gone"


KILLS: list[Kill] = [
    Kill("pending (agent down at admission)", None, before_publish=True),
    Kill("received (first running report)", received, before_publish=True),
    *(
        Kill(f"source hashing {int(q * 100)}%", hashing(q), before_publish=True)
        for q in (0.25, 0.5, 0.75)
    ),
    *(
        Kill(f"copy {int(q * 100)}%", copying(q), True, leaves_temp=True, interval=0.005)
        for q in (0.25, 0.5, 0.75)
    ),
    Kill("verify 50%", verifying, before_publish=True),
    Kill("target disk just published", published, interval=0.001),
    Kill("switch visible on the API", switched, interval=0.002),
    Kill("source copy just removed", source_removed, interval=0.002),
]


def post_move(m: Move) -> None:
    r = m.env.cluster.admin.post(f"/v1/vms/{m.vm}/move", json={"pool": m.dst.name})
    assert r.status_code == 202, r.text
    m.task_id = r.json()["task_id"]


def kill_at(m: Move, k: Kill) -> None:
    node = m.env.node
    if k.reached is None:  # the agent is down when the move is admitted
        node.kill(signal.SIGKILL)
        post_move(m)
        status = m.task()["status"]
        k.seen = f"task {status} while the agent was down"
        assert status == "pending", k.seen
        return
    post_move(m)
    reached = k.reached
    k.seen = poll(lambda: reached(m), k.interval, 60, k.label)
    assert node.alive, "the agent died before it was killed"
    node.kill(signal.SIGKILL)
    # where it landed, as the control plane saw it (read after the kill: no delay before it)
    vm = get_vm(m.env.cluster, m.vm)
    task = m.task()
    k.seen += f"; at the kill: move {task['status']}"
    if vm["status"]["task_id"] != m.task_id:
        k.seen += f", follow-up {get_task(m.env.cluster, vm['status']['task_id'])['status']}"
    check_at_kill(m, k)


def converge(m: Move, k: Kill, want_sha: str) -> TmpfsPool:
    """Start the agent again, let it finish; record what is wrong; the pool owning the VM."""
    cluster = m.env.cluster
    m.env.node.start()
    task = wait_task(cluster, m.task_id, timeout=90)
    k.outcome = task["status"]
    owner, other = (m.dst, m.src) if task["status"] == "success" else (m.src, m.dst)
    vm = wait_phase(cluster, m.vm, "stopped", timeout=30)
    if vm["pool_id"] != owner.id:
        k.problems.append(f"task {task['status']} but the VM is on pool {vm['pool']}")
    check_task_and_vm(cluster, m, k, task, vm, owner, want_sha)
    if not owner.disk(m.vm_id).is_file():
        k.problems.append(f"no disk in pool {owner.name}")
    elif file_sha(owner.disk(m.vm_id)) != want_sha:
        k.problems.append(f"the disk in pool {owner.name} differs from the original")
    check_no_leftovers(m, k, other)
    k.converged = not k.problems
    return owner


@pytest.mark.timeout(900)
def test_kill_9_at_every_step_of_a_move_leaves_one_owned_copy(
    env: Env, node: AgentProc, reliability
) -> None:
    a, b = env.pools["mva"], env.pools["mvb"]
    vm_id, want = make_vm(env, "mover", a)
    size = a.disk(vm_id).stat().st_size
    assert size >= DISK_MIB * MiB
    src, dst = a, b
    done: list[Kill] = []
    lost = 0
    started = time.monotonic()
    try:
        with Watcher(env.cluster, "mover", node) as watcher:
            for k in KILLS:
                m = Move(env, "mover", vm_id, src, dst, size)
                kill_at(m, k)
                done.append(k)
                owner = converge(m, k, want)
                copies = [p for p in (a, b) if p.disk(vm_id).is_file()]
                lost += not (copies == [owner] and file_sha(owner.disk(vm_id)) == want)
                print(f"{k.label}: saw {k.seen!r}; move {k.outcome} ({k.method}); on {owner.name}")
                if not k.converged:
                    break
                src, dst = owner, b if owner is a else a
            watcher.check()
    finally:
        reliability.record(
            "kill -9 agent at every step of a vm move",
            injected=len(done),
            survived=sum(k.converged for k in done),
            checked=len(done),
            lost=lost,
            detail=f"{len(KILLS)} kill points (pending to source removal) of a {DISK_MIB} MiB "
            f"qcow2 moved between two tmpfs pools at {RATE // MiB} MiB/s",
        )
    print(
        f"{len(done)} kills in {time.monotonic() - started:.0f}s; "
        f"{watcher.observations} observations of the VM"
    )
    failed = [k for k in done if not k.converged]
    assert not failed, failed
    assert len(done) == len(KILLS) >= 10
    assert len({k.label for k in done}) == len(KILLS)
    assert watcher.problems == [], watcher.problems[:5]
    assert watcher.observations > len(KILLS)
    assert lost == 0


# -- bad input: no room -------------------------------------------------------------------


def test_a_move_without_room_is_refused_first_at_admission_then_by_the_agent(
    env: Env, node: AgentProc
) -> None:
    home, tiny, stale = env.pools["home"], env.pools["tiny"], env.pools["stale"]
    vm_id, want = make_vm(env, "roomy", home)
    before = get_vm(env.cluster, "roomy")

    # A pool smaller than the disk: refused before anything is copied.
    r = env.cluster.admin.post("/v1/vms/roomy/move", json={"pool": tiny.name})
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "vm_not_movable", error
    assert error["details"]["reason"] == "insufficient_space", error
    assert error["details"]["available_bytes"] < error["details"]["needed_bytes"], error
    vm = get_vm(env.cluster, "roomy")
    assert (vm["pool_id"], vm["status"]["phase"]) == (home.id, "stopped")
    assert vm["status"]["task_id"] == before["status"]["task_id"]  # no task made
    assert not tiny.vm_dir(vm_id).exists()
    assert tiny.move_temps() == {}

    # Room at admission, gone before the copy: the agent's own check refuses.
    assert stale.view()["available_bytes"] > home.disk(vm_id).stat().st_size
    r = env.cluster.admin.post("/v1/vms/roomy/move", json={"pool": stale.name})
    assert r.status_code == 202, r.text
    ballast = stale.root / "ballast"  # beside the pool's dirs, written by the host
    with ballast.open("wb") as fh:
        for _ in range(TMPFS_MIB["stale"] - 8):
            fh.write(b"\xa5" * MiB)
    try:
        task = wait_task(env.cluster, r.json()["task_id"])
        assert task["status"] == "failed", task
        assert task["error"]["code"] in ("insufficient_space", "pool_full"), task
        vm = get_vm(env.cluster, "roomy")
        assert vm["pool_id"] == home.id
        assert vm["status"]["phase"] == "stopped"
        assert vm["status"]["reason"] == "move_failed", vm["status"]
        removal = wait_task(env.cluster, vm["status"]["task_id"])
        assert (removal["type"], removal["status"]) == ("vm.disk_remove", "success"), removal
        assert not stale.vm_dir(vm_id).exists()
        assert stale.move_temps() == {}
        assert file_sha(home.disk(vm_id)) == want
        assert vm["disks"][0]["file_path"] == str(home.disk(vm_id))
    finally:
        ballast.unlink()

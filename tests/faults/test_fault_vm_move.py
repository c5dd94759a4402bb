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

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import clustervms
from support.clustervms import Pool, create_vm, get_vm, wait_phase
from support.harness import FAST, MOUNT_NS_AVAILABLE, NODE_ROOT, AgentProc, Cluster, wait_until
from support.images import ImageOrigin, qcow2

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(not MOUNT_NS_AVAILABLE, reason="needs root, unshare and mount"),
]

MiB = 1 << 20
DISK_MIB = 24
RATE = 16 * MiB
#: one tmpfs per pool, mounted on the host before the agent starts
TMPFS_MIB = {"mva": 160, "mvb": 160, "home": 96, "tiny": 8, "stale": 48}
AGENT_CONFIG: dict[str, Any] = {
    "images": {"allow_loopback_and_link_local": True, "space_margin_bytes": MiB},
    "tasks": {"move_max_bytes_per_second": RATE, "retry_delay": 0.5},
}
FINAL = ("success", "failed", "cancelled")


def file_sha(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class TmpfsPool(Pool):
    """A pool whose root is a tmpfs mounted on the host (``Pool`` puts it under the node's
    ``/var/lib/otherix/pools``)."""

    def __init__(self, cluster: Cluster, node: AgentProc, name: str, root: Path) -> None:
        self.name, self.path, self.cluster = name, str(root), cluster
        r = cluster.admin.post(
            "/v1/storage-pools", json={"name": name, "node": node.name, "path": self.path}
        )
        assert r.status_code == 201, r.text
        self.id = r.json()["id"]
        cluster.wait_pool_status(node.name, name, "ready", timeout=20)
        self.root = node.host_path(self.path)
        assert self.root == root  # outside /var/lib/otherix: the host's own path

    def disk(self, vm_id: str) -> Path:
        return self.vm_dir(vm_id) / "disk.qcow2"

    def move_temps(self) -> dict[str, int]:
        """``scratch/move-*`` temps and their sizes."""
        out: dict[str, int] = {}
        for p in (self.root / "scratch").glob("move-*"):
            with contextlib.suppress(FileNotFoundError):
                out[p.name] = p.stat().st_size
        return out


@dataclass
class Env:
    cluster: Cluster
    node: AgentProc
    origin: ImageOrigin
    base: Path
    pools: dict[str, TmpfsPool]
    image: bytes


def _mount_tmpfs(path: Path, mib: int) -> None:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={mib}M,mode=0755", f"otx-mvf-{path.name}", str(path)],
        capture_output=True,
        timeout=15,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("mvf")
    base = Path(tempfile.mkdtemp(prefix="otx-mvf-", dir="/tmp"))
    mounted: list[Path] = []
    try:
        for name, mib in TMPFS_MIB.items():
            _mount_tmpfs(base / name, mib)
            mounted.append(base / name)
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
    finally:
        for path in reversed(mounted):
            _umount(path)
        if not any(os.path.ismount(p) for p in mounted):
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def node(env: Env) -> AgentProc:
    if not env.node.alive:
        env.node.start()
    return env.node


def get_task(cluster: Cluster, task_id: str) -> dict[str, Any]:
    r = cluster.admin.get(f"/v1/tasks/{task_id}")
    r.raise_for_status()
    return dict(r.json())


def wait_task(cluster: Cluster, task_id: str, timeout: float = 60) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        task = get_task(cluster, task_id)
        return task if task["status"] in FINAL else None

    return wait_until(final, timeout, f"task {task_id} final")


def make_vm(env: Env, name: str, pool: TmpfsPool) -> tuple[str, str]:
    """A stopped VM on ``pool`` from the module's image: (its id, its disk's sha256)."""
    url = env.origin.serve(f"/img/{name}.qcow2", env.image)
    vm = create_vm(env.cluster, name, pool, url, power_state="stopped")
    wait_phase(env.cluster, name, "stopped", timeout=60)
    sha = file_sha(pool.disk(vm["id"]))
    assert sha == hashlib.sha256(env.image).hexdigest()  # a full copy of the image
    return vm["id"], sha


# -- the watcher: no observation names a missing disk -------------------------------------


class Watcher:
    """Polls VM ``name`` in a thread (its own client): every view must name a disk file
    that exists on the host, not reported missing. A view whose file is gone is read
    again before it counts (the VM may have switched between the GET and the stat)."""

    def __init__(self, cluster: Cluster, node: AgentProc, name: str) -> None:
        self.node, self.name = node, name
        self.client = httpx.Client(
            base_url=cluster.admin.base_url, headers=cluster.admin.headers, timeout=10
        )
        self.observations = 0
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vm-watcher", daemon=True)

    def _view(self) -> dict[str, Any] | None:
        try:
            r = self.client.get(f"/v1/vms/{self.name}")
        except httpx.HTTPError:
            return None
        return dict(r.json()) if r.status_code == 200 else None

    def _problem(self, vm: dict[str, Any]) -> str | None:
        [disk] = vm["disks"]
        if disk["missing"]:
            return f"disk reported missing ({disk['missing_reason']}): {disk}"
        if not disk["file_path"] or not self.node.host_path(disk["file_path"]).is_file():
            return f"disk file {disk['file_path']} does not exist (phase {vm['status']['phase']})"
        return None

    def check(self) -> None:
        vm = self._view()
        if vm is None:
            return
        self.observations += 1
        if (problem := self._problem(vm)) is None:
            return
        again = self._view()
        if again is None or again["disks"][0]["file_path"] != vm["disks"][0]["file_path"]:
            return  # it switched between the GET and the stat: read it again next time
        if (problem := self._problem(again)) is not None:
            self.problems.append(problem)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.check()

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()


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
        t = self.task()
        result = t.get("result") or {}
        if t["status"] != "running" or result.get("phase") != phase:
            return None
        done, total = result.get("bytes_done") or 0, result.get("bytes_total") or 0
        return f"{phase} {done}/{total}" if total and done >= fraction * total else None


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


def copying(fraction: float) -> Callable[[Move], str | None]:
    def reached(m: Move) -> str | None:
        sizes = list(m.dst.move_temps().values())
        big = [s for s in sizes if fraction * m.size <= s < m.size]
        return f"copy: scratch temp at {big[0]}/{m.size} bytes" if big else None

    return reached


def verifying(m: Move) -> str | None:
    return m.progress("verify", 0.5)


def published(m: Move) -> str | None:
    return "target disk published" if m.dst.disk(m.vm_id).is_file() else None


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


def poll(fn: Callable[[], str | None], interval: float, timeout: float, what: str) -> str:
    """``wait_until`` at ``interval``: the points after the publish are short."""
    deadline = time.monotonic() + timeout
    while (seen := fn()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return seen


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
    if k.before_publish and m.dst.disk(m.vm_id).exists():
        k.problems.append(f"{k.label}: the target disk was published before the kill")
    if k.leaves_temp and not m.dst.move_temps():
        k.problems.append(f"{k.label}: no scratch temp in {m.dst.name} after the kill")


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
    if task["status"] != "success" and vm["status"]["reason"] != "move_failed":
        k.problems.append(f"failed move, VM status {vm['status']}")
    k.method = str((task.get("result") or {}).get("method") or "-")
    if task["status"] == "success" and task["result"]["sha256"] != want_sha:
        k.problems.append(f"task reports sha256 {task['result']['sha256']}")
    removal = wait_task(cluster, vm["status"]["task_id"], timeout=60)
    if (removal["type"], removal["status"]) != ("vm.disk_remove", "success"):
        k.problems.append(f"follow-up task {removal['type']} {removal['status']}: {removal}")
    if vm["disks"][0]["file_path"] != str(owner.disk(m.vm_id)):
        k.problems.append(f"the VM names {vm['disks'][0]['file_path']}")
    if not owner.disk(m.vm_id).is_file():
        k.problems.append(f"no disk in pool {owner.name}")
    elif file_sha(owner.disk(m.vm_id)) != want_sha:
        k.problems.append(f"the disk in pool {owner.name} differs from the original")
    if other.vm_dir(m.vm_id).exists():
        k.problems.append(
            f"a copy is left in pool {other.name}: {list(other.vm_dir(m.vm_id).iterdir())}"
        )
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not (m.src.move_temps() or m.dst.move_temps()), 20, "no move temps")
    for pool in (m.src, m.dst):
        if temps := pool.move_temps():
            k.problems.append(f"scratch temps left in {pool.name}: {temps}")
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
        with Watcher(env.cluster, node, "mover") as watcher:
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

"""Helpers for the ``kill -9`` tests of ``vm move`` (``test_fault_vm_move.py``, one node,
and ``test_fault_vm_move_nodes.py``, across two nodes).

Real parts only: every pool is a tmpfs of its own mounted on the HOST (:func:`host_tmpfs`)
before the agents start, so an agent in its own mount namespace sees the host's path
unchanged and the bytes outlive every kill (:class:`TmpfsPool`). Here: those pools and
their mounts, tasks through the API, the :class:`Watcher` thread (no view of the VM may
name a disk file that does not exist), the kill points both tests share, and the checks
of what a move left behind after the killed agent came back.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from support.clustervms import Pool
from support.harness import AgentProc, Cluster, wait_until

MiB = 1 << 20
FINAL = ("success", "failed", "cancelled")
#: the disk both tests move, and the agents' pace: about 1.5 s a phase, so every kill
#: point is reached by observation
DISK_MIB = 24
RATE = 16 * MiB
AGENT_CONFIG: dict[str, Any] = {
    "images": {"allow_loopback_and_link_local": True, "space_margin_bytes": MiB},
    "tasks": {"move_max_bytes_per_second": RATE, "retry_delay": 0.5},
}


def file_sha(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class TmpfsPool(Pool):
    """A pool whose root is a tmpfs mounted on the host (``Pool`` puts it under the node's
    ``/var/lib/otherix/pools``)."""

    def __init__(self, cluster: Cluster, node: AgentProc, name: str, root: Path) -> None:
        self.name, self.path, self.cluster, self.node = name, str(root), cluster, node
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


def _mount_tmpfs(path: Path, mib: int, prefix: str) -> None:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={mib}M,mode=0755", f"{prefix}{path.name}", str(path)],
        capture_output=True,
        timeout=15,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def host_tmpfs(prefix: str, sizes: Mapping[str, int]) -> Iterator[Path]:
    """A fresh ``/tmp/{prefix}*/`` with a tmpfs of ``sizes[name]`` MiB mounted at each
    ``{base}/{name}`` (its source named ``{prefix}{name}``); the base. Unmounted (lazily if
    busy) afterwards, the base removed once nothing is mounted there. Skips the test when
    a tmpfs cannot be mounted."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    mounted: list[Path] = []
    try:
        for name, mib in sizes.items():
            _mount_tmpfs(base / name, mib, prefix)
            mounted.append(base / name)
        yield base
    finally:
        for path in reversed(mounted):
            _umount(path)
        if not any(os.path.ismount(p) for p in mounted):
            shutil.rmtree(base, ignore_errors=True)


def get_task(cluster: Cluster, task_id: str) -> dict[str, Any]:
    r = cluster.admin.get(f"/v1/tasks/{task_id}")
    r.raise_for_status()
    return dict(r.json())


def wait_task(cluster: Cluster, task_id: str, timeout: float = 60) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        task = get_task(cluster, task_id)
        return task if task["status"] in FINAL else None

    return wait_until(final, timeout, f"task {task_id} final")


# -- the watcher: no observation names a missing disk -------------------------------------


class Watcher:
    """Polls VM ``name`` in a thread (its own client): every view must name a disk file
    that exists on the host, not reported missing. A view whose file is gone is read
    again before it counts (the VM may have switched between the GET and the stat).

    ``node``: the agent whose ``host_path`` gives the host's path of the disk; ``None``
    where every pool is outside ``/var/lib/otherix`` on several nodes (the node's path is
    the host's; a problem names the view's node)."""

    def __init__(self, cluster: Cluster, name: str, node: AgentProc | None = None) -> None:
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
        path = disk["file_path"]
        if path and (self.node.host_path(path) if self.node else Path(path)).is_file():
            return None
        if self.node is not None:
            return f"disk file {path} does not exist (phase {vm['status']['phase']})"
        return f"disk file {path} does not exist (node {vm['node']}, phase {vm['status']['phase']})"

    def check(self) -> None:
        vm = self._view()
        if vm is None:
            return
        self.observations += 1
        if self._problem(vm) is None:
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


# -- kill points ----------------------------------------------------------------------------


class MoveLike(Protocol):
    """What the shared kill points and checks read of a test's ``Move``."""

    vm_id: str
    src: TmpfsPool
    dst: TmpfsPool
    size: int

    def progress(self, phase: str, fraction: float) -> str | None: ...


class KillLike(Protocol):
    """What the shared checks read and write of a test's ``Kill``."""

    label: str
    before_publish: bool
    leaves_temp: bool
    method: str
    problems: list[str]


def task_progress(task: dict[str, Any], phase: str, fraction: float) -> str | None:
    """What a running ``task`` shows once it is ``fraction`` through ``phase``, else None."""
    result = task.get("result") or {}
    if task["status"] != "running" or result.get("phase") != phase:
        return None
    done, total = result.get("bytes_done") or 0, result.get("bytes_total") or 0
    return f"{phase} {done}/{total}" if total and done >= fraction * total else None


def copying(fraction: float, temp: str = "scratch temp") -> Callable[[MoveLike], str | None]:
    """The target's ``scratch/move-*`` temp (called ``temp`` in what it saw) is at
    ``fraction`` of the disk's size."""

    def reached(m: MoveLike) -> str | None:
        sizes = list(m.dst.move_temps().values())
        big = [s for s in sizes if fraction * m.size <= s < m.size]
        return f"copy: {temp} at {big[0]}/{m.size} bytes" if big else None

    return reached


def verifying(m: MoveLike) -> str | None:
    return m.progress("verify", 0.5)


def published(m: MoveLike) -> str | None:
    return "target disk published" if m.dst.disk(m.vm_id).is_file() else None


def poll(fn: Callable[[], str | None], interval: float, timeout: float, what: str) -> str:
    """``wait_until`` at ``interval``: the points after the publish are short."""
    deadline = time.monotonic() + timeout
    while (seen := fn()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return seen


# -- what a kill and the agent's return left ---------------------------------------------------


def check_at_kill(m: MoveLike, k: KillLike) -> None:
    """Right after the kill: nothing published before its point, a copy point's temp kept."""
    if k.before_publish and m.dst.disk(m.vm_id).exists():
        k.problems.append(f"{k.label}: the target disk was published before the kill")
    if k.leaves_temp and not m.dst.move_temps():
        k.problems.append(f"{k.label}: no scratch temp in {m.dst.name} after the kill")


def check_task_and_vm(
    cluster: Cluster,
    m: MoveLike,
    k: KillLike,
    task: dict[str, Any],
    vm: dict[str, Any],
    owner: TmpfsPool,
    want_sha: str,
) -> None:
    """The final move ``task`` and the ``vm`` after it: a failed move marked
    ``move_failed``, the sha256 reported, the follow-up ``vm.disk_remove`` done, the VM
    naming ``owner``'s disk. Records ``k.method``."""
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


def check_no_leftovers(m: MoveLike, k: KillLike, other: TmpfsPool) -> None:
    """Nothing of the VM in the pool that does not own it, no ``scratch/move-*`` temp in
    either pool once the restarted agent swept."""
    if other.vm_dir(m.vm_id).exists():
        k.problems.append(
            f"a copy is left in pool {other.name}: {list(other.vm_dir(m.vm_id).iterdir())}"
        )
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not (m.src.move_temps() or m.dst.move_temps()), 20, "no move temps")
    for pool in (m.src, m.dst):
        if temps := pool.move_temps():
            k.problems.append(f"scratch temps left in {pool.name}: {temps}")

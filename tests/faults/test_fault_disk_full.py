"""A pool that runs out of space under a real ``otherix-agent`` (root: mounts a tmpfs).

The node's whole ``/var/lib/otherix`` (its own mount namespace) is an 8 MiB
tmpfs, so both its pools share 8 MiB; the agent keeps a 1 MiB free-space
margin. Three ways to run out:

- an image whose ``Content-Length`` does not fit: refused before a byte is
  written;
- an image served without ``Content-Length``: the pre-check cannot refuse it,
  the stream hits ENOSPC;
- an image that fits, but the disk fills up (another writer) while it
  streams: the origin holds the body at 1.5 MiB while the test fills the
  tmpfs, then lets it go on.

Each time the ``vm.create`` task fails with ``pool_full`` (the VM is in
``error`` with that reason) and nothing partial stays behind: no image file,
no sidecar, no scratch file, no ``vms/{id}/``. With the pool kept full the
control plane shows ``disk_pressure`` on it and a new VM waits ``pending``
with reason ``node_pressure``; once space is freed the pressure clears and
that VM is created from the origin's bytes.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agenthelpers import (
    MiB,
    disk_path,
    entry_problems,
    file_sha,
    finished_task,
    one_node,
    sha,
)

from support.clustervms import Pool, create_vm, get_vm, wait_phase
from support.harness import AgentProc, Cluster, wait_until
from support.images import ImageOrigin, qcow2

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tmpfs"),
]

TMPFS_MIB = 8
MARGIN = 1 * MiB
#: free space left by the filler: enough for the pool's write probe, under 15 % (pressure)
LEAVE = 256 * 1024


@dataclass
class Env:
    origin: ImageOrigin
    cluster: Cluster
    node: AgentProc
    fs_root: Path  # the tmpfs, as the host sees it
    tmp: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("full")
    root = tmp / "node-full" / "root"  # the harness binds this on the node's /var/lib/otherix
    root.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MIB}M", "tmpfs", str(root)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        config = {
            "images": {
                "allow_loopback_and_link_local": True,
                "read_timeout": 20,
                "space_margin_bytes": MARGIN,
            }
        }
        with (
            ImageOrigin() as origin,
            one_node(tmp, "node-full", agent_config=config) as (cluster, node),
        ):
            assert node.mount_ns, "the tmpfs is only the node's view with a mount namespace"
            yield Env(origin, cluster, node, root, tmp)
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True, check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave: int) -> int:
    """Grow the file ``path`` until only ``leave`` bytes are free on its filesystem."""
    grow = max(0, free_bytes(path.parent) - leave)
    with open(path, "ab") as f:
        for off in range(0, grow, MiB):
            f.write(bytes(min(MiB, grow - off)))
    return grow


def leftovers(pool: Pool, vm_id: str) -> list[str]:
    """Everything a failed create may have left behind in the pool."""
    found = [f"images/{n}" for n in pool.images_dir()]
    found += [f"scratch/{n}" for n in pool.scratch()]
    if pool.vm_dir(vm_id).exists():
        found.append(f"vms/{vm_id}")
    return found


def failed_pool_full(env: Env, name: str) -> tuple[dict, dict]:
    vm = wait_phase(env.cluster, name, "error", timeout=40)
    return vm, finished_task(env.cluster, vm)


@pytest.mark.timeout(90)
def test_an_image_larger_than_the_pool_fails_pool_full_and_leaves_nothing(env: Env, reliability):
    big = os.urandom(12 * MiB)  # > 8 MiB: never fits
    env.origin.serve("/img/sized/too-big.img", big)
    env.origin.serve("/img/unsized/streamed.img", big, content_length=False)
    pool = Pool(env.cluster, env.node, "full1")
    cases = {
        "full-sized": ("/img/sized/too-big.img", "needs"),  # refused before the body
        "full-streamed": ("/img/unsized/streamed.img", "ran out of space"),  # ENOSPC mid-stream
    }
    injected = survived = checked = lost = 0
    problems: list[str] = []
    for name, (path, says) in cases.items():
        vm_id = create_vm(env.cluster, name, pool, env.origin.url_for(path))["id"]
        injected += 1
        vm, task = failed_pool_full(env, name)
        wait_until(lambda: pool.scratch() == [], 10, "scratch/ empty")
        left = leftovers(pool, vm_id)
        checked += 3  # images/, scratch/, vms/
        lost += len(left)
        [get] = env.origin.gets(path)
        ok = (
            vm["status"]["reason"] == "pool_full"
            and task["status"] == "failed"
            and task["error"]["code"] == "pool_full"
            and says in task["error"]["message"]
            and not left
            and free_bytes(pool.root) > TMPFS_MIB * MiB - MiB  # the space is back
        )
        if path.startswith("/img/unsized/") and get.sent <= MiB:
            ok = False  # the stream must have run until the disk was full
        survived += ok
        if not ok:
            problems.append(f"{name}: vm {vm['status']}, task {task}, left {left}, get {get}")
    reliability.record(
        "pool_full: image larger than the pool",
        injected=injected,
        survived=survived,
        checked=checked,
        lost=lost,
        detail=f"{TMPFS_MIB} MiB tmpfs pool; 12 MiB image with and without Content-Length",
    )
    assert not problems, problems
    # An empty pool is not under pressure.
    assert pool.view()["disk_pressure"] is None


@pytest.mark.timeout(110)
def test_a_pool_filling_up_mid_download_fails_pool_full_then_reports_pressure(
    env: Env, reliability
):
    image = qcow2(env.tmp, "mid.qcow2", data_mib=3)
    path = "/img/mid/mid.qcow2"
    env.origin.serve(path, image)
    pool = Pool(env.cluster, env.node, "full2")
    filler = env.fs_root / "filler"  # outside every pool, on the same tmpfs
    injected = checked = lost = 0
    recovered = False
    try:
        # The image fits (the pre-check passes); another writer fills the disk mid-stream.
        env.origin.hold(path, 3 * MiB // 2)
        vm_id = create_vm(env.cluster, "mid-1", pool, env.origin.url_for(path))["id"]
        held = wait_until(lambda: env.origin.held(path), 20, "the download under way")
        wait_until(lambda: sum(pool.scratch_sizes().values()) >= MiB, 20, "1 MiB in scratch/")
        injected += fill(filler, LEAVE) > 0
        held.release.set()
        vm, task = failed_pool_full(env, "mid-1")
        assert vm["status"]["reason"] == "pool_full", vm["status"]
        assert task["error"]["code"] == "pool_full", task
        assert "ran out of space" in task["error"]["message"]
        assert held.sent > 3 * MiB // 2  # it failed while streaming, after the hold
        wait_until(lambda: pool.scratch() == [], 10, "scratch/ empty")
        left = leftovers(pool, vm_id)
        checked += 3
        lost += len(left)
        assert left == []

        # Keep the pool full: the control plane shows pressure, placement holds a new VM.
        fill(filler, LEAVE)
        pressure = wait_until(lambda: pool.view()["disk_pressure"], 20, "disk pressure")
        assert pressure["since"]
        create_vm(env.cluster, "mid-2", pool, env.origin.url_for(path))
        waiting = wait_until(
            lambda: (
                (v := get_vm(env.cluster, "mid-2"))["status"]["reason"] == "node_pressure" and v
            ),
            20,
            "mid-2 held back for pressure",
        )
        assert waiting["status"]["phase"] == "pending"
        assert len(env.origin.gets(path)) == 1  # nothing was attempted on the full pool

        # Free the space: pressure clears, the waiting VM is placed and built right.
        filler.unlink()
        wait_until(lambda: pool.view()["disk_pressure"] is None, 20, "pressure cleared")
        done = wait_phase(env.cluster, "mid-2", "stopped", timeout=40)
        assert finished_task(env.cluster, done)["status"] == "success"
        problems = entry_problems(pool.root / "images", "mid.qcow2", image)
        disk_ok = file_sha(disk_path(env.node, done)) == sha(image)
        checked += 2
        lost += bool(problems) + (not disk_ok)
        assert problems == []
        assert disk_ok
        assert pool.scratch() == []
        recovered = True
    finally:
        filler.unlink(missing_ok=True)
        reliability.record(
            "pool_full: disk filled by another writer mid-download",
            injected=injected,
            survived=int(recovered and injected > 0),
            checked=checked,
            lost=lost,
            detail="pool_full, nothing partial, disk_pressure and node_pressure shown, "
            "VM created once space was freed",
        )

"""``kill -9`` of a real ``otherix-agent`` at many points of an image download.

One node (its own mount namespace as root), one origin serving a ~20 MiB
qcow2 image. Each kill gets a new VM whose image URL is its own cache entry,
so every kill starts from an empty entry. Seeded (``OTHERIX_FAULT_SEED``
replays a run; the seed is printed).

1. Mid-download: the origin stops the body at a random byte offset; once the
   agent has written that far into its scratch file it gets SIGKILL. Each
   kill is checked to have landed mid-download (a scratch file of 0 < size <
   image size, no entry committed, the origin's GET cut short). The offsets
   fall in distinct MiB of the image (the agent writes whole 1 MiB buffers),
   so every kill is at a different point of the stream, some past the 16 MiB
   ``fdatasync`` mark.
2. End of the stream: the origin sends everything and the agent is killed a
   random few milliseconds later, somewhere in fsync, ``qemu-img info``, the
   commit (rename, ``.source``, sidecar) or the disk clone. Whatever it hit, a
   sidecar on disk must describe the bytes beside it.

After each kill the agent is started again and must converge: the leftover
swept, the image fetched again in full when it was not committed, the VM
``stopped`` with its task ``success``, the disk and the cache entry
byte-identical to the origin, the sidecar matching the file, nothing left in
``scratch/``.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from agenthelpers import (
    MiB,
    disk_path,
    entry_problems,
    file_sha,
    finished_task,
    one_node,
    sha,
    uncommitted_files,
)

from support.clustervms import Pool, create_vm, get_vm, wait_phase
from support.harness import AgentProc, Cluster, wait_until
from support.images import ImageOrigin, qcow2

pytestmark = pytest.mark.slow

KILLS = 12
END_KILLS = 4
IMAGE_DATA_MIB = 20


@dataclass
class Kill:
    index: int
    vm: str
    path: str  # the origin path; its last segment is the cache entry's name
    offset: int | None = None  # where the origin stopped the body (None: not stopped)
    killed: bool = False
    scratch_at_kill: int = -1
    state_at_kill: str = ""
    expect_gets: int = 2  # the killed GET and a full one after the restart
    converged: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def entry(self) -> str:
        return self.path.rsplit("/", 1)[1]


@dataclass
class Env:
    origin: ImageOrigin
    cluster: Cluster
    node: AgentProc
    image: bytes


@pytest.fixture(scope="module")
def seed() -> int:
    value = int(os.environ.get("OTHERIX_FAULT_SEED") or random.SystemRandom().randrange(1 << 31))
    print(f"kill points seeded with OTHERIX_FAULT_SEED={value}")
    return value


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("dl")
    image = qcow2(tmp, "fault.qcow2", data_mib=IMAGE_DATA_MIB)
    with ImageOrigin() as origin, one_node(tmp) as (cluster, node):
        yield Env(origin, cluster, node, image)


@pytest.fixture
def node(env: Env) -> AgentProc:
    if not env.node.alive:
        env.node.start()
    return env.node


def kill_offsets(rng: random.Random, size: int) -> list[int]:
    """``KILLS`` byte offsets in distinct whole MiB of the image, past the first MiB
    (so the agent has written something) and short of the image's last MiB."""
    mibs = sorted(rng.sample(range(1, (size - 1) // MiB), KILLS))
    return [m * MiB + rng.randrange(MiB) for m in mibs]


def converge(env: Env, pool: Pool, k: Kill) -> None:
    """Start the agent again; record in ``k.problems`` whatever is not right once it is done."""
    image = env.image
    env.node.start()
    vm = wait_phase(env.cluster, k.vm, "stopped", timeout=40)
    task = finished_task(env.cluster, vm)
    if task["status"] != "success":
        k.problems.append(f"task {task}")
    k.problems += entry_problems(pool.root / "images", k.entry, image)
    if file_sha(disk_path(env.node, vm)) != sha(image):
        k.problems.append(f"{k.vm}: the disk differs from the image")
    if vm["disks"][0]["image_sha256"] != sha(image):
        k.problems.append(f"{k.vm}: reported image sha {vm['disks'][0]['image_sha256']}")
    wait_until(lambda: pool.scratch() == [], 10, "scratch/ empty")
    k.problems += [f"not committed: {n}" for n in uncommitted_files(pool.root / "images")]
    k.converged = not k.problems


def final_sweep(env: Env, pool: Pool, kills: list[Kill], vm_ids: dict[str, str]) -> tuple[int, int]:
    """(records checked, records lost) over every entry and disk the kills produced."""
    checked = lost = 0
    for k in kills:
        if not k.killed:
            continue
        checked += 2
        lost += bool(entry_problems(pool.root / "images", k.entry, env.image))
        disk = pool.vm_dir(vm_ids[k.vm]) / "disk.qcow2"
        lost += not disk.is_file() or file_sha(disk) != sha(env.image)
    return checked, lost


def kill_mid_download(env: Env, pool: Pool, k: Kill) -> None:
    origin, node = env.origin, env.node
    assert k.offset is not None
    held = wait_until(lambda: origin.held(k.path), 20, f"GET {k.path} held")
    want = k.offset // MiB * MiB

    def written() -> int | None:
        sizes = [s for n, s in pool.scratch_sizes().items() if n.startswith(f"{k.entry}.")]
        return sizes[0] if sizes and sizes[0] >= want else None

    wait_until(written, 20, f"scratch of {k.entry} at {want} bytes")
    assert node.alive, "the agent died before it was killed"
    node.kill(signal.SIGKILL)
    assert not node.alive
    k.killed = True

    # It really was mid-download: a partial scratch file, no entry, the GET cut short.
    [(leftover, k.scratch_at_kill)] = pool.scratch_sizes().items()
    assert leftover.startswith(f"{k.entry}."), leftover
    assert leftover.endswith(".tmp"), leftover
    assert 0 < k.scratch_at_kill <= k.offset < len(env.image), k
    assert not {k.entry, f"{k.entry}.sha256"} & set(pool.images_dir())
    wait_until(lambda: held.client_gone, 10, "the origin to see the agent's connection go")
    assert not held.finished
    assert held.sent == k.offset


def run_kills(env: Env, pool: Pool, kills: list[Kill], kill_one, vm_ids: dict[str, str]) -> None:
    """Per kill: a VM, the kill (``kill_one``), the restart and its checks; stops at a failure."""
    for k in kills:
        env.origin.serve(k.path, env.image)
        if k.offset is not None:
            env.origin.hold(k.path, k.offset)
        vm_ids[k.vm] = create_vm(env.cluster, k.vm, pool, env.origin.url_for(k.path))["id"]
        kill_one(env, pool, k)
        converge(env, pool, k)
        # Re-fetched in full unless the kill came after the commit (then a cache hit).
        gets = env.origin.gets(k.path)
        if len(gets) != k.expect_gets or not gets[-1].finished:
            k.problems.append(f"expected {k.expect_gets} GETs, the origin saw {gets}")
            k.converged = False
        if not k.converged:
            break


@pytest.mark.timeout(150)
def test_kill_9_at_random_points_of_a_download_never_leaves_a_bad_entry(
    env: Env, node: AgentProc, seed: int, reliability
) -> None:
    rng = random.Random(seed)
    assert len(env.image) > 16 * MiB  # some kills land past the first fdatasync mark
    kills = [
        Kill(i, f"dl-{i:02d}", f"/img/k{i:02d}/fault-{i:02d}.qcow2", offset=off)
        for i, off in enumerate(kill_offsets(rng, len(env.image)))
    ]
    pool = Pool(env.cluster, node, "dlkill")
    started = time.monotonic()
    vm_ids: dict[str, str] = {}
    try:
        run_kills(env, pool, kills, kill_mid_download, vm_ids)
    finally:
        checked, lost = final_sweep(env, pool, kills, vm_ids)
        done = [k for k in kills if k.killed]
        reliability.record(
            "kill -9 agent mid-download",
            injected=len(done),
            survived=sum(k.converged for k in done),
            checked=checked,
            lost=lost,
            detail=f"kill points in distinct MiB of a {IMAGE_DATA_MIB} MiB qcow2, "
            "a new VM and cache entry per kill",
        )
    print(
        f"{len(done)} kills in {time.monotonic() - started:.1f}s at scratch sizes "
        f"{[k.scratch_at_kill for k in kills]}"
    )

    failed = [k for k in kills if not k.converged]
    assert not failed, f"seed {seed}: {failed}"
    assert len(done) == KILLS
    assert lost == 0
    # Every kill at its own point of the stream.
    assert len({k.scratch_at_kill for k in kills}) == KILLS, [k.scratch_at_kill for k in kills]
    # The pool view lists exactly the committed entries, with the origin's hash.
    names = {k.entry for k in kills}
    wait_until(
        lambda: pool.listed_images() == dict.fromkeys(names, sha(env.image)),
        10,
        "the pool view to list every entry",
    )
    assert pool.images_dir() == sorted(
        f"{n}{suffix}" for n in names for suffix in ("", ".sha256", ".source")
    )


def kill_at_end_of_stream(rng: random.Random):
    def kill_one(env: Env, pool: Pool, k: Kill) -> None:
        [get] = wait_until(lambda: env.origin.gets(k.path), 20, f"GET {k.path}")
        wait_until(lambda: get.finished, 20, f"GET {k.path} fully sent")
        time.sleep(rng.uniform(0, 0.3))  # land somewhere in fsync/commit/clone
        assert env.node.alive, "the agent died before it was killed"
        env.node.kill(signal.SIGKILL)
        k.killed = True
        images = pool.root / "images"
        names = set(pool.images_dir())
        if f"{k.entry}.sha256" in names:
            # Committed: the sidecar must describe the bytes beside it, whatever came next.
            assert (images / f"{k.entry}.sha256").read_text() == file_sha(images / k.entry)
            vm_id = get_vm(env.cluster, k.vm)["id"]
            cloned = (pool.vm_dir(vm_id) / "disk.qcow2").exists()
            k.state_at_kill = "disk cloned" if cloned else "committed, before the clone"
            k.expect_gets = 1  # a committed entry is whole: the restarted agent hits it
        elif k.entry in names:
            k.state_at_kill = "image renamed, sidecar not yet written"
        else:
            k.state_at_kill = "before commit"

    return kill_one


@pytest.mark.timeout(90)
def test_kill_9_at_the_end_of_a_download_never_leaves_a_bad_entry(
    env: Env, node: AgentProc, seed: int, reliability
) -> None:
    rng = random.Random(seed + 1)
    kills = [Kill(i, f"end-{i:02d}", f"/img/e{i:02d}/end-{i:02d}.qcow2") for i in range(END_KILLS)]
    pool = Pool(env.cluster, node, "endkill")
    vm_ids: dict[str, str] = {}
    try:
        run_kills(env, pool, kills, kill_at_end_of_stream(rng), vm_ids)
    finally:
        checked, lost = final_sweep(env, pool, kills, vm_ids)
        done = [k for k in kills if k.killed]
        reliability.record(
            "kill -9 agent at the end of a download (fsync, commit, clone)",
            injected=len(done),
            survived=sum(k.converged for k in done),
            checked=checked,
            lost=lost,
            detail=f"0-300 ms after the last byte of a {IMAGE_DATA_MIB} MiB qcow2",
        )
    print(f"states at kill: {Counter(k.state_at_kill for k in kills)}")
    failed = [k for k in kills if not k.converged]
    assert not failed, f"seed {seed}: {failed}"
    assert len(done) == END_KILLS
    assert lost == 0

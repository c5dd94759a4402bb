"""``kill -9`` of a real ``otherix-agent`` in the middle of a cache scrub (issue 16).

One node that runs VMs, one pool scrubbed at a low rate (``config.scrub``: no schedule,
4 MiB/s) so that a scrub of its ~12 MiB takes seconds. The cache holds a running VM's
image (a real QEMU), an entry a qcow2 disk under ``vms/`` uses as its backing file, four
good entries of random bytes and, per kill, one damaged entry (a byte flipped under an
intact sidecar). Each kill is during a ``storage_pool.scrub`` task:

- mid-hash, at seeded byte offsets of the scrub (``OTHERIX_FAULT_SEED``; the task's
  ``bytes_done`` progress says how far it is), so most land mid-file;
- at each step of the damaged entry's quarantine (``debug.pause_at`` on
  ``scrub.quarantine``: under the lock, once its directory is made, after the sidecar,
  the image and the ``.source`` moved, after ``scrub.json``).

After each kill the agent is started again; it runs the same task again. Then: the
damaged entry is in ``quarantine/`` exactly once, whole (its sidecar, image,
``.source`` and ``scrub.json``), and nothing of it is left in ``images/``; every good
entry and what VMs need is intact and nothing good was quarantined; the pool view's
quarantine report is exactly what ``quarantine/`` holds.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from agenthelpers import get_task
from cachefaults import (
    FaultLog,
    backing_disk,
    detail,
    entry_files,
    entry_state,
    final_task,
    vm_node,
    write_entry,
)

from support.clustervms import Pool, create_vm, get_vm
from support.harness import AgentProc, Cluster, wait_until
from support.images import ImageOrigin, qcow2

pytestmark = pytest.mark.slow

MiB = 1 << 20
RATE = 4 * MiB
STEPS = ("start", "dir", "sidecar", "image", "source", "report")
HASH_KILLS = 4


@dataclass
class Env:
    cluster: Cluster
    node: AgentProc
    pool: Pool
    good: dict[str, bytes]  # never damaged: VMs' images and the good entries
    log: FaultLog
    disk: Path


@dataclass
class Kill:
    index: int
    bad: str
    at: str = ""
    problems: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def seed() -> int:
    value = int(os.environ.get("OTHERIX_FAULT_SEED") or random.SystemRandom().randrange(1 << 31))
    print(f"kill points seeded with OTHERIX_FAULT_SEED={value}")
    return value


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("scrub")
    blank = qcow2(tmp, "run.qcow2", virtual="16M")
    with ImageOrigin() as origin, vm_node(tmp, {"scrub.quarantine": 0.5}) as (cluster, node):
        pool = Pool(cluster, node, "scr")
        scrub = {"interval": 0, "max_bytes_per_second": RATE}
        r = cluster.admin.patch(f"/v1/storage-pools/{pool.id}", json={"config": {"scrub": scrub}})
        assert r.status_code == 200, r.text
        create_vm(cluster, "runner", pool, origin.serve("/img/run.qcow2", blank), memory_mb=128)
        wait_until(
            lambda: get_vm(cluster, "runner")["status"]["state"] == "running" or None,
            60,
            "the VM running",
        )
        images = pool.root / "images"
        good = {"run.qcow2": blank, "base.img": os.urandom(MiB)}
        good |= {f"g{j}.img": os.urandom(2 * MiB) for j in range(4)}
        for name, data in good.items():
            if name != "run.qcow2":
                write_entry(images, name, data)
        disk = backing_disk(pool, "base.img")
        yield Env(cluster, node, pool, good, FaultLog(node), disk)


@pytest.fixture
def node(env: Env) -> AgentProc:
    if not env.node.alive:
        env.node.start()
    return env.node


def damaged_entry(env: Env, k: Kill) -> None:
    images = env.pool.root / "images"
    data = bytearray(os.urandom(2 * MiB))
    write_entry(images, k.bad, bytes(data))
    with open(images / k.bad, "r+b") as fh:  # the sidecar stays: the rot is silent
        fh.seek(len(data) // 2)
        fh.write(bytes([data[len(data) // 2] ^ 0x01]))


def start_scrub(env: Env) -> str:
    env.log.mark()
    r = env.cluster.admin.post(f"/v1/storage-pools/{env.pool.id}/scrub")
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


def kill_mid_hash(env: Env, k: Kill, task_id: str, offset: int) -> None:
    def far_enough() -> dict[str, Any] | None:
        result = get_task(env.cluster, task_id).get("result") or {}
        return result if int(result.get("bytes_done") or 0) >= offset else None

    got = wait_until(far_enough, 30, f"the scrub {offset} bytes in")
    assert env.node.alive, "the agent died before it was killed"
    env.node.kill(signal.SIGKILL)
    k.at = f"hash: {got['bytes_done']} of {got['bytes_total']} (asked {offset})"


def kill_at_step(env: Env, k: Kill, n: int) -> None:
    line = env.log.wait("scrub.quarantine", n)
    assert detail(line, "image") == k.bad, line
    assert env.node.alive, "the agent died before it was killed"
    env.node.kill(signal.SIGKILL)
    k.at = f"quarantine: {detail(line, 'step')}"


def quarantined_dirs(env: Env) -> list[Path]:
    base = env.pool.root / "quarantine"
    return sorted(d for d in base.iterdir() if d.is_dir()) if base.is_dir() else []


def check(env: Env, k: Kill, task_id: str) -> int:
    """After the restart and the task run again: what is wrong, in ``k.problems``."""
    task = final_task(env.cluster, task_id)
    if task["status"] != "success":
        k.problems.append(f"the scrub after the restart: {task['status']} {task.get('error')}")
    images = env.pool.root / "images"
    for name, data in env.good.items():
        state = entry_state(images, name, data)
        if state != "present":
            k.problems.append(f"good {name}: {state}")
    if not env.disk.is_file():
        k.problems.append("the backing-file disk went")
    mine = [d for d in quarantined_dirs(env) if d.name.startswith(f"{k.bad}.")]
    if len(mine) != 1:
        k.problems.append(f"{k.bad} quarantined {len(mine)} times: {[d.name for d in mine]}")
    else:
        want = sorted([k.bad, f"{k.bad}.sha256", f"{k.bad}.source", "scrub.json"])
        if sorted(os.listdir(mine[0])) != want:
            k.problems.append(f"quarantine of {k.bad} holds {sorted(os.listdir(mine[0]))}")
    left = entry_files(images, k.bad)
    if left:
        k.problems.append(f"left in images/: {left}")
    names = {p.name.rsplit(".", 1)[0] for p in quarantined_dirs(env)}
    wrong = names - {f"k{i:02d}-bad.img" for i in range(100)}
    if wrong:
        k.problems.append(f"good entries quarantined: {sorted(wrong)}")

    def report_matches() -> bool | None:
        listed = sorted(q["path"] for q in (env.pool.view()["scrub"] or {}).get("quarantined", []))
        return listed == [f"quarantine/{d.name}" for d in quarantined_dirs(env)] or None

    try:
        wait_until(report_matches, 15, "the quarantine report to match quarantine/")
    except AssertionError:
        k.problems.append(f"reported {env.pool.view()['scrub']}, on disk {quarantined_dirs(env)}")
    return len(env.good) + 2


def run(env: Env, kills: list[Kill], kill_one) -> int:
    checked = 0
    for k in kills:
        damaged_entry(env, k)
        task_id = start_scrub(env)
        kill_one(env, k, task_id)
        env.node.start()
        checked += check(env, k, task_id)
        if k.problems:
            break
    return checked


def record(reliability, name: str, kills: list[Kill], checked: int, detail_: str) -> None:
    done = [k for k in kills if k.at]
    reliability.record(
        name,
        injected=len(done),
        survived=sum(not k.problems for k in done),
        checked=checked,
        lost=sum(p.startswith(("good", "the backing")) for k in done for p in k.problems),
        detail=detail_,
    )


@pytest.mark.timeout(300)
def test_kill_9_mid_hash_of_a_scrub(env: Env, node: AgentProc, seed: int, reliability) -> None:
    rng = random.Random(seed)
    total = sum(len(d) for d in env.good.values()) + 2 * MiB
    offsets = sorted(rng.sample(range(MiB // 2, total - MiB), HASH_KILLS))
    kills = [Kill(i, f"k{i:02d}-bad.img") for i in range(HASH_KILLS)]
    it = iter(offsets)
    checked = 0
    try:
        checked = run(env, kills, lambda e, k, t: kill_mid_hash(e, k, t, next(it)))
    finally:
        record(reliability, "kill -9 agent mid-scrub (hashing)", kills, checked,
               f"at seeded byte offsets of a scrub at {RATE // MiB} MiB/s over 7 entries, "
               "one damaged")  # fmt: skip
    print([k.at for k in kills])
    failed = [k for k in kills if k.problems]
    assert not failed, f"seed {seed}: {failed}"


@pytest.mark.timeout(300)
def test_kill_9_at_every_step_of_a_quarantine(env: Env, node: AgentProc, reliability) -> None:
    kills = [Kill(10 + i, f"k{10 + i:02d}-bad.img") for i in range(len(STEPS))]
    steps = iter(range(len(STEPS)))
    checked = 0
    try:
        checked = run(env, kills, lambda e, k, _t: kill_at_step(e, k, next(steps)))
    finally:
        record(reliability, "kill -9 agent mid-quarantine (scrub)", kills, checked,
               f"at each of the {len(STEPS)} steps of moving a damaged entry")  # fmt: skip
    print([k.at for k in kills])
    failed = [k for k in kills if k.problems]
    assert not failed, failed

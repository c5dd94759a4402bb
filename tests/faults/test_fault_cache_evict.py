"""``kill -9`` of a real ``otherix-agent`` in the middle of a cache eviction (issue 16).

One node that runs VMs, one pool (``config.cache``: ``min_age`` 0, one pinned image).
The pool's cache holds what VMs need and must never lose: the image of a running VM
(a real QEMU, made from an origin URL) and an entry a qcow2 disk under ``vms/`` uses as
its backing file (a disk imported by hand); a pinned entry; and, per kill, three
entries of fresh random bytes that may go.

The agent pauses at every step of an eviction (``debug.pause_at`` on ``evict.step``:
under the entry's lock before anything is removed, then after the sidecar, the
``.source`` and the image are removed), so each kill lands at a chosen step: every
one of the 12 steps of a prune of three entries, and, for evictions under pressure
(``cache.max_bytes`` crossed, no task), at seeded points (``OTHERIX_FAULT_SEED``).

After each kill the agent is started again and must converge: what VMs need and the
pinned entry are intact (file, sidecar and ``.source`` agree); each of the three is
either fully present (its three files, the bytes hash to the sidecar) or fully gone
(no file left: no half entry stays behind, where nothing would report or reuse it);
and the evictions reported (``image_evicted`` events) are exactly what is gone.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cachefaults import (
    FaultLog,
    backing_disk,
    detail,
    entry_state,
    events,
    final_task,
    vm_node,
    write_entry,
)

from support.clustervms import Pool, create_vm, get_vm
from support.harness import AgentProc, Cluster, wait_until
from support.images import ImageOrigin, qcow2

pytestmark = pytest.mark.slow

ENTRIES = 3
STEPS = ("start", "sidecar", "source", "image")
PRESSURE_KILLS = 4
PAUSE = 0.3


@dataclass
class Env:
    cluster: Cluster
    node: AgentProc
    pool: Pool
    needed: dict[str, bytes]  # entries VMs need, and the pinned one
    log: FaultLog
    disk: Path


@dataclass
class Kill:
    index: int
    at: str = ""  # image and step the agent stood at
    states: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def seed() -> int:
    value = int(os.environ.get("OTHERIX_FAULT_SEED") or random.SystemRandom().randrange(1 << 31))
    print(f"kill points seeded with OTHERIX_FAULT_SEED={value}")
    return value


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("evict")
    blank = qcow2(tmp, "run.qcow2", virtual="16M")
    with ImageOrigin() as origin, vm_node(tmp, {"evict.step": PAUSE}) as (cluster, node):
        pool = Pool(cluster, node, "evk")
        url = origin.serve("/img/run.qcow2", blank)
        create_vm(cluster, "runner", pool, url, memory_mb=128)
        wait_until(
            lambda: get_vm(cluster, "runner")["status"]["state"] == "running" or None,
            60,
            "the VM running",
        )
        images = pool.root / "images"
        needed = {"run.qcow2": blank, "base.img": os.urandom(512 << 10)}
        needed["pin.img"] = os.urandom(256 << 10)
        for name in ("base.img", "pin.img"):
            write_entry(images, name, needed[name])
        disk = backing_disk(pool, "base.img")
        set_cache(cluster, pool, max_bytes=None)
        yield Env(cluster, node, pool, needed, FaultLog(node), disk)


def set_cache(cluster: Cluster, pool: Pool, *, max_bytes: int | None) -> None:
    cache: dict[str, object] = {"min_age": 0, "pinned": ["pin.img"]}
    if max_bytes is not None:
        cache["max_bytes"] = max_bytes
    r = cluster.admin.patch(f"/v1/storage-pools/{pool.id}", json={"config": {"cache": cache}})
    assert r.status_code == 200, r.text


@pytest.fixture
def node(env: Env) -> AgentProc:
    if not env.node.alive:
        env.node.start()
    return env.node


def fresh_entries(env: Env, k: Kill) -> dict[str, bytes]:
    images = env.pool.root / "images"
    made = {f"k{k.index:02d}-e{j}.img": os.urandom(64 << 10) for j in range(ENTRIES)}
    for name, data in made.items():
        write_entry(images, name, data)
    return made


def kill_at(env: Env, k: Kill, n: int) -> None:
    line = env.log.wait("evict.step", n)
    assert env.node.alive, "the agent died before it was killed"
    env.node.kill(signal.SIGKILL)
    k.at = f"{detail(line, 'image')}:{detail(line, 'step')}"


def check(env: Env, k: Kill, made: dict[str, bytes]) -> int:
    """After the restart: record what is wrong in ``k.problems``; the records checked."""
    images = env.pool.root / "images"
    for name, data in env.needed.items():
        state = entry_state(images, name, data)
        if state != "present":
            k.problems.append(f"needed {name}: {state}")
    if not env.disk.is_file():
        k.problems.append("the backing-file disk went")
    k.states = {name: entry_state(images, name, data) for name, data in made.items()}
    k.problems += [f"{n}: {s}" for n, s in k.states.items() if s not in ("present", "gone")]
    gone = {n for n, s in k.states.items() if s == "gone"}

    def reported() -> set[str] | None:
        got = {
            e["details"]["image"]
            for e in events(env.cluster, env.node.name, "image_evicted")
            if e["details"]["image"] in made
        }
        return got if got == gone else None

    try:
        wait_until(reported, 15, "the evictions reported to match what is gone")
    except AssertionError:
        got = {
            e["details"]["image"]
            for e in events(env.cluster, env.node.name, "image_evicted")
            if e["details"]["image"] in made
        }
        k.problems.append(f"reported evicted {sorted(got)}, gone {sorted(gone)}")
    return len(env.needed) + 1 + len(made)


def record(reliability, name: str, kills: list[Kill], checked: int, detail_: str) -> None:
    reliability.record(
        name,
        injected=len(kills),
        survived=sum(not k.problems for k in kills),
        checked=checked,
        lost=sum(p.startswith("needed") or "went" in p for k in kills for p in k.problems),
        detail=detail_,
    )


@pytest.mark.timeout(400)
def test_kill_9_at_every_step_of_a_prune(env: Env, node: AgentProc, reliability) -> None:
    kills = [Kill(i) for i in range(ENTRIES * len(STEPS))]
    checked = 0
    try:
        for k in kills:
            made = fresh_entries(env, k)
            env.log.mark()
            r = env.cluster.admin.post(f"/v1/storage-pools/{env.pool.id}/cache/prune")
            assert r.status_code == 202, r.text
            kill_at(env, k, k.index)
            env.node.start()
            task = final_task(env.cluster, r.json()["task_id"])
            if task["status"] != "success":
                k.problems.append(f"the prune after the restart: {task}")
            checked += check(env, k, made)
            if any(s != "gone" for s in k.states.values()):
                k.problems.append(f"the prune run again left {k.states}")
    finally:
        done = [k for k in kills if k.at]
        record(reliability, "kill -9 agent mid-prune of the image cache", done, checked,
               f"at each of the {len(kills)} steps of a prune of {ENTRIES} entries; "
               "a running VM's image, a backing file and a pinned entry kept")  # fmt: skip
    print({k.at: k.states for k in kills})
    failed = [k for k in kills if k.problems]
    assert not failed, failed
    assert len(done) == len(kills)


@pytest.mark.timeout(300)
def test_kill_9_mid_eviction_under_pressure(
    env: Env, node: AgentProc, seed: int, reliability
) -> None:
    rng = random.Random(seed)
    points = rng.sample(range(ENTRIES * len(STEPS)), PRESSURE_KILLS)
    kills = [Kill(100 + i) for i in range(PRESSURE_KILLS)]
    checked = 0
    images = env.pool.root / "images"
    try:
        for k, n in zip(kills, points, strict=True):
            made = fresh_entries(env, k)
            env.log.mark()
            set_cache(env.cluster, env.pool, max_bytes=1)  # everything that may go, goes
            kill_at(env, k, n)
            env.node.start()

            def finished(made: dict[str, bytes] = made) -> bool | None:
                return all(entry_state(images, m, d) == "gone" for m, d in made.items()) or None

            wait_until(finished, 30, "the restarted agent to finish the eviction")
            set_cache(env.cluster, env.pool, max_bytes=None)
            checked += check(env, k, made)
    finally:
        set_cache(env.cluster, env.pool, max_bytes=None)
        done = [k for k in kills if k.at]
        record(reliability, "kill -9 agent mid-eviction under pressure (cache.max_bytes)", done,
               checked, f"at seeded steps {sorted(points)} of {ENTRIES * len(STEPS)}")  # fmt: skip
    print({k.at: k.states for k in kills})
    failed = [k for k in kills if k.problems]
    assert not failed, f"seed {seed}: {failed}"
    assert len(done) == PRESSURE_KILLS

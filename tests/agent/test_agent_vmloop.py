"""The agent loop with VM tasks (otherix.agent.daemon + tasks): hand-off, short watches
while busy, the image inventory in the next heartbeat. Stub control plane, fake clock,
and a ``FakeVms`` in place of the worker threads."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from test_agent_daemon import NODE, StubControlPlane

from otherix.agent.daemon import Daemon, LoopConfig
from otherix.agent.fs import ProtectedRoots
from otherix.agent.images import ImageCache, KeyedLocks
from otherix.agent.pools import PoolReconciler
from otherix.agent.report import PoolState
from otherix.agent.runtime import StopToken
from otherix.agent.tasks import TaskRunner
from otherix.models.heartbeat import AgentTask, DeclaredPool
from support.clock import FakeClock


class FakeVms:
    """Records hand-offs; ``busy_until`` and ``images_at`` are fake times."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.submitted: list[str] = []
        self.forgotten: list[set[str]] = []
        self.busy_until = 0.0
        self.images_at: float | None = None

    def handles(self, task_type: str) -> bool:
        return task_type.startswith("vm.")

    def submit(self, task: AgentTask) -> bool:
        self.submitted.append(task.id)
        return True

    def forget(self, keep: set[str]) -> None:
        self.forgotten.append(keep)

    def busy(self) -> bool:
        return self.clock.monotonic() < self.busy_until or self.images_at is not None

    def take_images_changed(self) -> bool:
        if self.images_at is not None and self.clock.monotonic() >= self.images_at:
            self.images_at = None
            return True
        return False


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.host = tmp_path / "host"
        self.stop = StopToken()
        self.clock = FakeClock(monotonic_start=0.0, until=100, stop=self.stop)
        self.cp = StubControlPlane(self.clock)
        self.vms = FakeVms(self.clock)
        protected = ProtectedRoots()  # shared, as the agent's composition root does
        self.pools = PoolState(
            PoolReconciler(protected=protected),
            allowed_prefixes=["/var/lib/otherix/pools/"],
            host_root=self.host,
            images=ImageCache(locks=KeyedLocks(), protected=protected),
        )
        self.daemon = Daemon(
            client=self.cp,
            pools=self.pools,
            tasks=TaskRunner(self.pools, vms=self.vms),  # type: ignore[arg-type]
            state=NODE,
            clock=self.clock,
            stop=self.stop,
            config=LoopConfig(),
            agent_version="0.1.0",
            rng=random.Random(7),
        )

    def declare(self, *tasks: AgentTask) -> None:
        pool = DeclaredPool(name="p1", type="local_dir", path="/var/lib/otherix/pools/p1")
        self.cp.declare(pool, tasks=list(tasks))


def create(task_id: str) -> AgentTask:
    return AgentTask(id=task_id, type="vm.create", args={})


def test_vm_tasks_are_handed_off_once_and_dropped_ones_forgotten(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.declare(create("t1"))
    rig.cp.at(40, lambda: rig.declare(create("t1"), create("t2")))
    rig.cp.at(70, lambda: rig.declare())
    rig.daemon.run()
    assert rig.vms.submitted == ["t1", "t2"]
    assert rig.vms.forgotten[-1] == set()
    assert rig.cp.task_updates == []  # VM tasks report through their own outbox


def test_watches_are_short_while_vm_tasks_run(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.vms.busy_until = 10.0
    rig.daemon.run()
    busy = [timeout for t, _, timeout in rig.cp.watches if t < 10]
    idle = [timeout for t, _, timeout in rig.cp.watches if t >= 11]
    assert busy
    assert max(busy) <= 1.0
    assert idle
    assert max(idle) > 1.0


def test_a_changed_cache_is_in_the_next_heartbeat(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.declare(create("t1"))
    data = b"qcow2? no: raw bytes" * 100
    root = Path(str(rig.host) + "/var/lib/otherix/pools/p1")

    def image_lands() -> None:
        (root / "images" / "a.img").write_bytes(data)
        (root / "images" / "a.img.sha256").write_text(hashlib.sha256(data).hexdigest())
        rig.vms.images_at = rig.clock.monotonic()

    rig.cp.at(5, image_lands)
    rig.daemon.run()
    with_images = [
        (t, r.pools[0].images) for t, r in rig.cp.reports if r.pools and r.pools[0].images
    ]
    t, images = with_images[0]
    assert 5 <= t <= 6  # not at the next periodic reconcile (30 s)
    assert images is not None
    assert [(i.name, i.size_bytes) for i in images] == [("a.img", len(data))]

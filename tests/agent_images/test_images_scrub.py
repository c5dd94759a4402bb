"""Cache scrub on a real pool (``images.scrub``, ``scrubber.Scrubber``, ``report.PoolState``):
real entries fetched from a real HTTP origin, real hashing, real moves into ``quarantine/``.
The clock and the sleep are injected: nothing here sleeps or asserts a timing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otherix.agent.fs import ProtectedRoots
from otherix.agent.images import ImageCache, ImageCacheSettings, KeyedLocks
from otherix.agent.images import scrub as scrubbing
from otherix.agent.pools import PoolReconciler
from otherix.agent.report import PoolState
from otherix.agent.scrubber import SCRUB, STATE_NAME, Scrubber
from otherix.agent.tasks import TaskRunner
from otherix.domain.scrub import ScrubPolicy
from otherix.models.heartbeat import AgentTask, DeclaredPool, TaskUpdate
from support.images import ImageOrigin

MIB = 1024 * 1024
POOL = "/var/lib/otherix/pools/p1"


class SpyOutbox:
    def __init__(self) -> None:
        self.progressed: list[TaskUpdate] = []
        self.finished: list[tuple[str, TaskUpdate]] = []

    def progress(self, task_id: str, update: TaskUpdate) -> None:
        self.progressed.append(update)

    def finish(self, task_id: str, update: TaskUpdate) -> None:
        self.finished.append((task_id, update))


class FakeClock:
    """Monotonic time that moves only when slept (``sleep`` records what it was asked)."""

    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


class Node:
    def __init__(self, tmp_path: Path, origin: ImageOrigin) -> None:
        self.host = tmp_path / "host"
        protected = ProtectedRoots()
        settings = ImageCacheSettings(
            allowed_networks=("127.0.0.1/32",), space_margin_bytes=0, progress_interval=0.0
        )
        self.cache = ImageCache(settings, locks=KeyedLocks(), protected=protected)
        self.state = PoolState(
            PoolReconciler(protected=protected),
            allowed_prefixes=["/var/lib/otherix/pools/"],
            host_root=self.host,
            images=self.cache,
        )
        self.origin = origin
        self.root = Path(str(self.host) + POOL)
        self.config: dict[str, Any] = {"scrub": {"interval": "0"}}
        self.outbox = SpyOutbox()
        self.clock = FakeClock()
        self.scrubber = self.new_scrubber()
        self.urls: dict[str, str] = {}
        self.reconcile()

    def new_scrubber(self) -> Scrubber:
        scrubber = Scrubber(
            locks=self.cache.locks,
            pools=self.state,
            outbox=self.outbox,  # type: ignore[arg-type]
            monotonic=self.clock,
            sleep=self.clock.sleep,
        )
        self.state.set_scrubber(scrubber)
        return scrubber

    def reconcile(self) -> None:
        self.state.reconcile(
            [DeclaredPool(name="p1", type="local_dir", path=POOL, config=self.config)]
        )

    def fetch(self, name: str, size: int = MIB) -> str:
        body = os.urandom(size)
        self.urls[name] = self.origin.serve(f"/{name}", body)
        self.cache.ensure_image(self.root, self.urls[name])
        return hashlib.sha256(body).hexdigest()

    def flip(self, name: str, offset: int = 1000) -> None:
        path = self.root / "images" / name
        with open(path, "r+b") as fh:
            fh.seek(offset)
            byte = fh.read(1)
            fh.seek(offset)
            fh.write(bytes([byte[0] ^ 0x01]))

    def scrub_now(self) -> TaskUpdate:
        return self.scrubber.run_task(AgentTask(id="t1", type=SCRUB, args={"pool": "p1"}))

    def report(self) -> Any:
        [report] = self.state.reports
        return report


@pytest.fixture
def origin() -> Iterator[ImageOrigin]:
    with ImageOrigin() as o:
        yield o


@pytest.fixture
def node(tmp_path: Path, origin: ImageOrigin) -> Node:
    return Node(tmp_path, origin)


def test_a_flipped_byte_is_found_and_quarantined_and_the_next_use_downloads_again(
    node: Node,
) -> None:
    good = node.fetch("good.img")
    bad = node.fetch("bad.img", size=2 * MIB)
    node.flip("bad.img")
    flipped = hashlib.sha256((node.root / "images" / "bad.img").read_bytes()).hexdigest()

    update = node.scrub_now()

    assert update.status == "success"
    assert update.result is not None
    assert update.result["entries"] == 2
    assert update.result["bytes"] == 3 * MIB
    [q] = update.result["quarantined"]
    assert (q["image"], q["sha256_expected"], q["sha256_found"]) == ("bad.img", bad, flipped)
    # the entry is absent; its files sit in quarantine/, sidecar included
    assert sorted(i.name for i in node.cache.list_images(node.root)) == ["good.img"]
    assert not any(n.startswith("bad.img") for n in os.listdir(node.root / "images"))
    qdir = node.root / q["path"]
    assert qdir.parent == node.root / "quarantine"
    assert sorted(os.listdir(qdir)) == ["bad.img", "bad.img.sha256", "bad.img.source", "scrub.json"]
    assert (qdir / "bad.img.sha256").read_text() == bad
    assert hashlib.sha256((qdir / "bad.img").read_bytes()).hexdigest() == flipped
    # progress went out as bytes done of total, ending at the total
    last = node.outbox.progressed[-1].result
    assert last == {"bytes_done": 3 * MIB, "bytes_total": 3 * MIB}
    # the report carries it; the clean entry is untouched
    node.reconcile()
    scrub = node.report().scrub
    assert [(x.image, x.sha256_found) for x in scrub.quarantined] == [("bad.img", flipped)]
    assert scrub.last_completed_at is not None
    assert scrub.running is None
    assert (node.root / "images" / "good.img.sha256").read_text() == good
    # the next use of the name downloads it again; the quarantined bytes stay
    gets = len(node.origin.gets("/bad.img"))
    again = node.cache.ensure_image(node.root, node.urls["bad.img"])
    assert again.downloaded
    assert again.sha256 == bad
    assert len(node.origin.gets("/bad.img")) == gets + 1
    assert (qdir / "bad.img").exists()


def test_a_clean_cache_quarantines_nothing(node: Node) -> None:
    node.fetch("a.img")
    node.fetch("b.img")
    update = node.scrub_now()
    assert update.status == "success"
    assert update.result == {"entries": 2, "bytes": 2 * MIB, "quarantined": [], "kept": []}
    assert not (node.root / "quarantine").exists()
    assert sorted(i.name for i in node.cache.list_images(node.root)) == ["a.img", "b.img"]
    node.reconcile()
    assert node.report().scrub.quarantined == []


def test_the_rate_cap_makes_the_scrub_sleep_for_its_bytes(node: Node) -> None:
    for i in range(3):
        node.fetch(f"img{i}.img", size=3 * MIB)
    cap = MIB  # 9 MiB at 1 MiB/s: at least 9 s of sleep, less one chunk
    clock = FakeClock()
    result = scrubbing.scrub(
        node.root,
        locks=node.cache.locks,
        max_bytes_per_second=cap,
        clock=clock,
        sleep=clock.sleep,
    )
    assert result.bytes == 9 * MIB
    assert sum(clock.slept) >= 9 * MIB / cap - scrubbing.CHUNK_BYTES / cap
    # no cap: no sleep
    clock = FakeClock()
    scrubbing.scrub(node.root, locks=node.cache.locks, max_bytes_per_second=None,
                    clock=clock, sleep=clock.sleep)  # fmt: skip
    assert clock.slept == []


def test_a_crash_after_moving_the_sidecar_is_reported_on_start(node: Node, tmp_path: Path) -> None:
    sha = node.fetch("half.img")
    # what a kill -9 right after the first move leaves: the sidecar in quarantine/, no more
    qdir = node.root / "quarantine" / "half.img.20260101T000000Z"
    qdir.mkdir(parents=True)
    os.rename(node.root / "images" / "half.img.sha256", qdir / "half.img.sha256")
    assert node.cache.list_images(node.root) == []  # absent at once: never used again

    node.scrubber = node.new_scrubber()  # a restarted agent
    node.reconcile()
    [q] = node.report().scrub.quarantined
    assert (q.image, q.sha256_expected, q.sha256_found) == ("half.img", sha, None)
    assert q.path == "quarantine/half.img.20260101T000000Z"


def test_the_schedule_runs_when_due_and_the_completion_survives_a_restart(node: Node) -> None:
    node.fetch("a.img")
    node.config = {"scrub": {"interval": "1h", "max_bytes_per_second": 4 * MIB}}
    node.reconcile()
    node.scrubber.step(0)  # never scrubbed: due
    state = json.loads((node.root / STATE_NAME).read_text())
    assert state["last_completed_at"] is not None
    node.flip("a.img")
    node.scrubber.step(0)  # completed just now: not due, nothing moved
    assert not (node.root / "quarantine").exists()
    # a restarted agent reads the completion back: still not due
    node.scrubber = node.new_scrubber()
    node.scrubber.step(0)
    assert not (node.root / "quarantine").exists()
    node.reconcile()
    assert node.report().scrub.last_completed_at is not None


def test_an_entry_replaced_while_it_was_hashed_is_left_alone(node: Node) -> None:
    node.fetch("a.img")
    node.flip("a.img")

    def replace(done: int, total: int) -> None:
        if done == total and total:  # hashed; now a fresh download replaces it
            node.cache.ensure_image(node.root, node.urls["a.img"], pull_policy="always")

    result = scrubbing.scrub(node.root, locks=node.cache.locks, max_bytes_per_second=None,
                             progress=replace)  # fmt: skip
    assert result.quarantined == []
    assert [i.name for i in node.cache.list_images(node.root)] == ["a.img"]


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_a_damaged_backing_file_of_a_vm_disk_is_kept_in_place(node: Node) -> None:
    node.fetch("base.img")
    vm_dir = node.root / "vms" / "3f0c5d2e-0000-4000-8000-000000000001"
    vm_dir.mkdir()
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "../../images/base.img",
         "-F", "raw", str(vm_dir / "disk.qcow2")],
        check=True,
    )  # fmt: skip
    node.flip("base.img")
    update = node.scrub_now()
    assert update.result is not None
    assert (update.result["quarantined"], update.result["kept"]) == ([], ["base.img"])
    assert (node.root / "images" / "base.img.sha256").exists()
    assert not (node.root / "quarantine").exists()


def test_an_unknown_pool_fails_the_task(node: Node) -> None:
    update = node.scrubber.run_task(AgentTask(id="t2", type=SCRUB, args={"pool": "nope"}))
    assert update.status == "failed"
    assert update.error is not None
    assert update.error["code"] == "not_found"


def test_default_policy_is_weekly_at_64_mib() -> None:
    assert ScrubPolicy().interval_s == 7 * 86400
    assert ScrubPolicy().max_bytes_per_second == 64 * MIB


class SpyReporter:
    def __init__(self) -> None:
        self.sent: list[tuple[str, TaskUpdate]] = []

    def update_task(self, node: str, task_id: str, update: TaskUpdate) -> None:
        self.sent.append((task_id, update))


def test_the_task_runner_hands_a_scrub_to_the_scrubber_once(node: Node) -> None:
    node.fetch("a.img")
    node.flip("a.img")
    runner = TaskRunner(node.state, scrubber=node.scrubber)
    task = AgentTask(id="t9", type=SCRUB, args={"pool": "p1"})
    reporter = SpyReporter()
    runner.run(reporter, "n1", [task])
    runner.run(reporter, "n1", [task])  # still desired: not queued again
    assert reporter.sent == []  # the scrubber reports it, through the outbox
    node.scrubber.step(0)
    [(task_id, update)] = node.outbox.finished
    assert (task_id, update.status) == ("t9", "success")
    assert update.result is not None
    assert [q["image"] for q in update.result["quarantined"]] == ["a.img"]
    assert runner.take_images_changed()  # the next heartbeat carries the new report
    node.scrubber.step(0)  # nothing queued, the schedule is off
    assert len(node.outbox.finished) == 1

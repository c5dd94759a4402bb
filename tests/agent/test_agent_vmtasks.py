"""VM tasks (otherix.agent.vmtasks, vmwork, tasks): dedupe, outcomes, failure mapping,
retries, cancellation, with a stub image cache, a real pool and real disks (qemu-img).

The image cache itself is tested in tests/agent_images; here ``StubCache``
returns a real qcow2 file inside the pool's ``images/`` (so the disk library
really clones it) or raises what the test scripts. Reports go to a spy through
a real ``TaskOutbox`` pumped by hand.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from otherix.agent.fs import ProtectedRoots
from otherix.agent.images import CachedImage, ImageCache, ImageError, KeyedLocks, ScratchArea
from otherix.agent.outbox import TaskOutbox
from otherix.agent.pools import PoolReconciler
from otherix.agent.report import PoolState
from otherix.agent.tasks import TaskRunner
from otherix.agent.vmtasks import VmTasks
from otherix.models.heartbeat import AgentTask, DeclaredPool, TaskUpdate
from support.reporters import SpyReporter

POOL = "/var/lib/otherix/pools/p1"
SHA = "ab" * 32


class StubCache:
    """``ensure_image`` returns ``image``; ``script`` items run first, one per call:
    an exception is raised, a callable gets the progress callback."""

    def __init__(self, image: CachedImage, protected: ProtectedRoots) -> None:
        self.image = image
        # the disk clone after it uses the cache's area, locks and protected roots
        self.protected = protected
        self.locks = KeyedLocks()
        self.scratch = ScratchArea(self.protected)
        self.calls: list[dict[str, Any]] = []
        self.script: list[Exception | Callable[[Any], object]] = []

    def ensure_image(self, pool_root, url, *, sha256=None, pull_policy="if-not-present", progress):
        self.calls.append({"root": Path(pool_root), "url": url, "sha256": sha256})
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            step(progress)
        progress(0, 1000)
        progress(1000, 1000)
        return self.image


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.host_root = tmp_path / "host"
        protected = ProtectedRoots()  # shared, as the agent's composition root does
        self.pools = PoolState(
            PoolReconciler(protected=protected),
            allowed_prefixes=["/var/lib/otherix/pools/"],
            host_root=self.host_root,
        )
        self.pools.reconcile([DeclaredPool(name="p1", type="local_dir", path=POOL)])
        self.root = Path(str(self.host_root) + POOL)
        image = self.root / "images" / "base.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True, timeout=30
        )
        self.cache = StubCache(
            CachedImage(
                name="base.qcow2",
                path=image,
                sha256=SHA,
                size_bytes=image.stat().st_size,
                virtual_size_bytes=1 << 20,
                format="qcow2",
                imported_at="2026-01-01T00:00:00Z",
            ),
            protected,
        )
        self.reporter = SpyReporter()
        self.outbox = TaskOutbox(self.reporter, "n1", interval=0.0)
        self.vms: VmTasks | None = None

    def start(self, **kw: Any) -> VmTasks:
        kw.setdefault("retry_delay", 0.0)
        self.vms = VmTasks(
            cache=cast(ImageCache, self.cache), pools=self.pools, outbox=self.outbox, **kw
        )
        return self.vms

    def outcome(self, task_id: str, timeout: float = 10.0) -> TaskUpdate:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.outbox.pump()
            final = [u for u in self.reporter.of(task_id) if u.status != "running"]
            if final:
                return final[-1]
            time.sleep(0.01)
        raise AssertionError(f"no outcome for {task_id}: {self.reporter.of(task_id)}")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    if e.vms is not None:
        e.vms.close()


def create_task(vm_id: str | None = None, task_id: str | None = None, **args: Any) -> AgentTask:
    body = {
        "vm_id": vm_id or str(uuid.uuid4()),
        "pool_name": "p1",
        "pool_path": POOL,
        "image_url": "http://images.test/base.qcow2",
        "image_sha256": None,
        "pull_policy": "if-not-present",
        "format": "qcow2",
        "disk_gib": 0,
        **args,
    }
    return AgentTask(id=task_id or str(uuid.uuid4()), type="vm.create", args=body)


def delete_task(vm_id: str, **args: Any) -> AgentTask:
    body = {"vm_id": vm_id, "pool_name": "p1", "pool_path": POOL, "file_path": None, **args}
    return AgentTask(id=str(uuid.uuid4()), type="vm.delete", args=body)


def test_create_reports_running_then_the_disk(env: Env) -> None:
    vms = env.start()
    task = create_task(disk_gib=1)
    assert vms.submit(task)
    done = env.outcome(task.id)
    assert done.status == "success"
    assert done.progress == 100
    vm = task.args["vm_id"]
    assert done.result is not None
    assert done.result == {
        "vm_id": vm,
        "image_sha256": SHA,
        "virtual_size_bytes": 1 << 30,
        "disk_size_bytes": done.result["disk_size_bytes"],
        "file_path": f"{POOL}/vms/{vm}/disk.qcow2",  # as the node sees it, not the host_root view
    }
    assert (env.root / "vms" / vm / "disk.qcow2").is_file()
    assert env.reporter.of(task.id)[0].status == "running"
    assert env.cache.calls[0]["root"] == env.root
    assert vms.take_images_changed()
    assert not vms.take_images_changed()


def test_progress_carries_bytes_and_phase(env: Env) -> None:
    env.outbox.interval = 0.0
    gate = threading.Event()
    # every update handed to the outbox (the outbox may coalesce the last progress
    # into the outcome before a pump sends it, so the spy alone can miss "clone")
    handed: list[TaskUpdate] = []
    hand_in = env.outbox.progress

    def recording(task_id: str, update: TaskUpdate) -> None:
        handed.append(update)
        hand_in(task_id, update)

    env.outbox.progress = recording  # type: ignore[method-assign]

    def slow(progress) -> None:
        progress(0, 1000)
        progress(450, 1000)
        gate.wait(5)

    env.cache.script = [slow]
    task = create_task()
    env.start().submit(task)
    deadline = time.monotonic() + 5
    while not any((u.result or {}).get("bytes_done") == 450 for u in env.reporter.of(task.id)):
        env.outbox.pump()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    update = next(u for u in env.reporter.of(task.id) if (u.result or {}).get("bytes_done") == 450)
    assert update.status == "running"
    assert update.progress == 40  # 45 % of the 0-90 download range
    assert update.result == {"bytes_done": 450, "bytes_total": 1000, "phase": "download"}
    gate.set()
    assert env.outcome(task.id).status == "success"
    phases = {(u.result or {}).get("phase") for u in handed}
    assert {"download", "clone"} <= phases


def test_a_task_is_started_once_and_a_restart_reruns_it_idempotently(env: Env) -> None:
    vms = env.start()
    task = create_task()
    runner = TaskRunner(env.pools, vms=vms)
    runner.run(env.reporter, "n1", [task])
    assert not runner.pending([task])
    runner.run(env.reporter, "n1", [task])
    assert not vms.submit(task)
    first = env.outcome(task.id)
    runner.run(env.reporter, "n1", [task])  # done, still desired: not started again
    time.sleep(0.1)
    assert len(env.cache.calls) == 1
    assert first.result is not None
    disk = Path(str(env.host_root) + first.result["file_path"])
    mtime = disk.stat().st_mtime_ns

    vms.close()  # the agent restarts: new tables, the same task still desired
    env.reporter.sent.clear()
    env.outbox = TaskOutbox(env.reporter, "n1", interval=0.0)
    again = env.start()
    again.submit(task)
    second = env.outcome(task.id)
    assert second.result == first.result
    assert disk.stat().st_mtime_ns == mtime  # the complete disk was found, not rebuilt


def test_tasks_dropped_from_the_desired_state_are_forgotten(env: Env) -> None:
    vms = env.start()
    runner = TaskRunner(env.pools, vms=vms)
    task = create_task()
    runner.run(env.reporter, "n1", [task])
    env.outcome(task.id)
    assert runner.pending([])  # dropped: the runner must forget it
    runner.run(env.reporter, "n1", [])
    assert not runner.pending([])
    assert vms.submit(task)  # forgotten, so known again only if re-sent


@pytest.mark.parametrize(
    ("error", "code", "calls"),
    [
        pytest.param(
            ImageError("checksum_mismatch", "url u served sha a, expected b"),
            "checksum_mismatch",
            1,
            id="checksum-not-retried",
        ),
        pytest.param(ImageError("pool_full", "no room"), "pool_full", 1, id="pool-full"),
        pytest.param(ImageError("image_collision", "other"), "image_collision", 1, id="collision"),
        pytest.param(
            ImageError("download_failed", "source returned HTTP 503"),
            "download_failed",
            3,
            id="download-retried-then-failed",
        ),
        pytest.param(RuntimeError("bug"), "internal", 1, id="unexpected"),
    ],
)
def test_failures_map_to_codes(env: Env, error: Exception, code: str, calls: int) -> None:
    env.cache.script = [error, error, error]
    task = create_task()
    env.start(attempts=3).submit(task)
    done = env.outcome(task.id)
    assert done.status == "failed"
    assert done.error is not None
    assert done.error["code"] == code
    if isinstance(error, ImageError):
        assert done.error["message"] == error.message
    assert len(env.cache.calls) == calls
    assert not (env.root / "vms" / task.args["vm_id"]).exists()


def test_a_retryable_failure_that_passes_succeeds(env: Env) -> None:
    env.cache.script = [ImageError("download_failed", "reset"), ImageError("clone_failed", "io")]
    task = create_task()
    env.start(attempts=3).submit(task)
    assert env.outcome(task.id).status == "success"
    assert len(env.cache.calls) == 3


@pytest.mark.parametrize(
    ("args", "code"),
    [
        pytest.param({"pool_name": "nope"}, "pool_not_found", id="unknown-pool"),
        pytest.param({"pool_path": "/var/lib/otherix/pools/other"}, "pool_not_found", id="path"),
        pytest.param({"vm_id": "not-a-uuid"}, "validation_failed", id="vm-id"),
        pytest.param({"image_sha256": "xyz"}, "validation_failed", id="sha"),
        pytest.param({"pull_policy": "never"}, "validation_failed", id="policy"),
        pytest.param({"disk_gib": -1}, "validation_failed", id="disk-gib"),
        pytest.param({"format": "vmdk"}, "unsupported_format", id="format"),
    ],
)
def test_bad_arguments_fail_without_touching_the_cache(env: Env, args, code) -> None:
    task = create_task(**args)
    env.start().submit(task)
    done = env.outcome(task.id)
    assert done.error is not None
    assert done.error["code"] == code
    assert env.cache.calls == []


def test_disk_too_small_comes_from_the_disk_library(env: Env, tmp_path: Path) -> None:
    big = env.root / "images" / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(big), "2G"], check=True)
    env.cache.image = CachedImage(**{**env.cache.image.__dict__, "path": big})
    task = create_task(disk_gib=1)
    env.start().submit(task)
    error = env.outcome(task.id).error
    assert error is not None
    assert error["code"] == "disk_too_small"


def test_delete_removes_the_disk_keeps_the_cache_and_is_idempotent(env: Env) -> None:
    vms = env.start()
    create = create_task()
    vms.submit(create)
    env.outcome(create.id)
    vm = create.args["vm_id"]
    for _ in range(2):
        task = delete_task(vm)
        vms.submit(task)
        done = env.outcome(task.id)
        assert done.status == "success"
        assert not (env.root / "vms" / vm).exists()
    assert (env.root / "images" / "base.qcow2").is_file()
    assert env.reporter.of(task.id)[-1].result == {"vm_id": vm, "removed": False}


def test_delete_of_a_vm_without_a_disk_succeeds(env: Env) -> None:
    task = delete_task(str(uuid.uuid4()), pool_name=None, pool_path=None)
    env.start().submit(task)
    assert env.outcome(task.id).status == "success"


def test_delete_on_an_unknown_pool_fails(env: Env) -> None:
    task = delete_task(str(uuid.uuid4()), pool_name="gone")
    env.start().submit(task)
    error = env.outcome(task.id).error
    assert error is not None
    assert error["code"] == "pool_not_found"


def a_create_downloading(env: Env) -> tuple[VmTasks, AgentTask]:
    """The workers started and a ``vm.create`` submitted whose download runs until it is
    cancelled (about 5 s, then it fails the test); returns once the download has begun."""
    started = threading.Event()

    def step(progress) -> None:
        started.set()
        for i in range(500):
            progress(i, 1000)
            time.sleep(0.01)
        raise AssertionError("never cancelled")

    env.cache.script = [step]
    vms = env.start()
    task = create_task()
    vms.submit(task)
    assert started.wait(5)
    return vms, task


def test_delete_cancels_the_same_vms_create_then_removes(env: Env) -> None:
    vms, create = a_create_downloading(env)
    delete = delete_task(create.args["vm_id"])
    vms.submit(delete)
    assert env.outcome(delete.id).status == "success"
    cancelled = env.outcome(create.id)
    assert cancelled.status == "failed"
    assert cancelled.error is not None
    assert cancelled.error["code"] == "cancelled"
    assert not (env.root / "vms" / create.args["vm_id"]).exists()


def test_a_withdrawn_task_is_cancelled_without_a_report(env: Env) -> None:
    vms, task = a_create_downloading(env)
    vms.forget(set())
    deadline = time.monotonic() + 5
    while not vms.idle():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    env.outbox.pump()
    assert all(u.status == "running" for u in env.reporter.of(task.id))


def test_creates_run_at_most_n_at_once(env: Env) -> None:
    gate, lock = threading.Event(), threading.Lock()
    running, peak = [0], [0]

    def hold(_progress) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        gate.wait(5)
        with lock:
            running[0] -= 1

    env.cache.script = [hold] * 5
    vms = env.start(create_workers=2)
    tasks = [create_task() for _ in range(5)]
    for t in tasks:
        vms.submit(t)
    deadline = time.monotonic() + 5
    while peak[0] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # a third would have started by now if it could
    assert peak[0] == 2
    # a delete has its own worker: it does not wait behind the downloads
    other = delete_task(str(uuid.uuid4()))
    vms.submit(other)
    assert env.outcome(other.id).status == "success"
    gate.set()
    for t in tasks:
        assert env.outcome(t.id).status == "success"
    assert peak[0] == 2


def test_delete_of_a_queued_create_does_not_wait_for_the_line(env: Env) -> None:
    gate = threading.Event()
    env.cache.script = [lambda _progress: gate.wait(5)]
    vms = env.start(create_workers=1)
    busy, queued = create_task(), create_task()
    vms.submit(busy)  # holds the only create worker
    vms.submit(queued)
    delete = delete_task(queued.args["vm_id"])
    vms.submit(delete)
    assert env.outcome(delete.id).status == "success"  # while `busy` still runs
    assert not gate.is_set()
    gate.set()
    assert env.outcome(busy.id).status == "success"
    cancelled = env.outcome(queued.id)
    assert cancelled.error == {
        "code": "cancelled",
        "message": "the VM is being deleted",
        "details": {"retryable": False},
    }
    assert not (env.root / "vms" / queued.args["vm_id"]).exists()
    assert len(env.cache.calls) == 1  # the cancelled create never fetched anything


def test_cancellation_is_not_logged_as_an_error(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="otherix.agent")
    vms, _ = a_create_downloading(env)
    vms.close()
    assert "unexpectedly" not in caplog.text
    assert "task abandoned" in caplog.text


def test_a_retry_waits_in_line_and_lets_another_task_use_the_worker(env: Env) -> None:
    """One worker: while the first task waits out its backoff, the second one runs."""
    env.cache.script = [ImageError("download_failed", "source returned HTTP 503")]
    vms = env.start(create_workers=1, attempts=2, retry_delay=0.5)
    first = create_task(image_url="http://a.test/base.qcow2")
    second = create_task(image_url="http://b.test/base.qcow2")
    vms.submit(first)
    vms.submit(second)
    assert env.outcome(second.id).status == "success"
    assert env.outcome(first.id).status == "success"
    assert [c["url"] for c in env.cache.calls] == [
        "http://a.test/base.qcow2",
        "http://b.test/base.qcow2",  # ran during the first task's backoff
        "http://a.test/base.qcow2",
    ]
    tries = [(u.attempt, u.max_attempts) for u in env.reporter.of(first.id)]
    assert tries[0] == (1, 2)
    assert tries[-1] == (2, 2)


def test_a_delete_during_a_backoff_ends_the_create_at_once(env: Env) -> None:
    env.cache.script = [ImageError("download_failed", "source returned HTTP 503")]
    vms = env.start(attempts=3, retry_delay=60.0)
    create = create_task()
    vms.submit(create)
    deadline = time.monotonic() + 5
    while not (env.cache.calls and vms._line.waiting() == 1):  # failed; waits 60 s in line
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert len(env.cache.calls) == 1
    delete = delete_task(create.args["vm_id"])
    vms.submit(delete)
    assert env.outcome(delete.id).status == "success"
    cancelled = env.outcome(create.id, timeout=10)
    assert cancelled.error is not None
    assert cancelled.error["code"] == "cancelled"
    assert len(env.cache.calls) == 1

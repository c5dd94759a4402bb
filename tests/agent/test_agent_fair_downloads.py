"""Fair downloads and refused URLs through the real VM task workers.

``VmTasks`` with the real ``ImageCache`` on a tmp pool, real HTTP image
servers on loopback (``support.images.ImageOrigin``: a normal one, one that
drips a byte at a time, one that stalls after its headers) and a real
``TaskOutbox`` whose reports a spy collects. Windows are short (settings), so
a slow source fails in about a second and a half.

What a user would see on the task: the outcome, ``error.code`` /
``message`` / ``details``, and ``attempt`` / ``max_attempts``.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otherix.agent.fs import ProtectedRoots
from otherix.agent.images import ImageCache, ImageCacheSettings, KeyedLocks
from otherix.agent.outbox import TaskOutbox
from otherix.agent.pools import PoolReconciler
from otherix.agent.report import PoolState
from otherix.agent.vmtasks import VmTasks
from otherix.models.heartbeat import AgentTask, DeclaredPool, TaskUpdate
from support.images import ImageOrigin
from support.reporters import SpyReporter

POOL = "/var/lib/otherix/pools/p1"
FLOOR = {"min_rate_bytes_per_second": 1024, "min_rate_window": 1.5}


class Node:
    """One node's VM task workers over a real pool and a real image cache."""

    def __init__(self, tmp_path: Path) -> None:
        host_root = tmp_path / "host"
        #: shared by the reconciler and the cache, as the agent's composition root does
        self.protected = ProtectedRoots()
        self.pools = PoolState(
            PoolReconciler(protected=self.protected),
            allowed_prefixes=["/var/lib/otherix/pools/"],
            host_root=host_root,
        )
        self.pools.reconcile([DeclaredPool(name="p1", type="local_dir", path=POOL)])
        self.root = Path(str(host_root) + POOL)
        self.reporter = SpyReporter()
        self.outbox = TaskOutbox(self.reporter, "n1", interval=0.0).start()
        self.vms: VmTasks | None = None

    def start(self, settings: ImageCacheSettings, **kw: Any) -> VmTasks:
        """VM task workers over a real ``ImageCache`` with ``settings``."""
        kw.setdefault("retry_delay", 0.0)
        cache = ImageCache(settings, locks=KeyedLocks(), protected=self.protected)
        self.vms = VmTasks(cache=cache, pools=self.pools, outbox=self.outbox, **kw)
        return self.vms

    def outcome(self, task_id: str, timeout: float = 20.0) -> TaskUpdate | None:
        final = [u for u in self.reporter.of(task_id) if u.status != "running"]
        return final[-1] if final else None

    def wait_outcome(self, task_id: str, timeout: float = 20.0) -> TaskUpdate:
        deadline = time.monotonic() + timeout
        while (done := self.outcome(task_id)) is None:
            assert time.monotonic() < deadline, f"no outcome for {task_id}"
            time.sleep(0.02)
        return done

    def leftovers(self) -> list[str]:
        return sorted(os.listdir(self.root / "images")) + sorted(os.listdir(self.root / "scratch"))

    def close(self) -> None:
        if self.vms is not None:
            self.vms.close()
        self.outbox.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    yield n
    n.close()


def cache_settings(**kw: Any) -> ImageCacheSettings:
    base: dict[str, Any] = {"allowed_networks": ("127.0.0.1/32",), "progress_interval": 0.0}
    return ImageCacheSettings(**{**base, **kw})


def create(url: str) -> AgentTask:
    args = {
        "vm_id": str(uuid.uuid4()),
        "pool_name": "p1",
        "pool_path": POOL,
        "image_url": url,
        "image_sha256": None,
        "pull_policy": "if-not-present",
        "format": "raw",
        "disk_gib": 0,
    }
    return AgentTask(id=str(uuid.uuid4()), type="vm.create", args=args)


def wait_for(what: str, check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "image.raw"
    path.write_bytes(os.urandom(64 * 1024))
    return path


def test_a_small_image_from_another_source_goes_through_while_two_slow_downloads_run(
    node: Node, image_file: Path
) -> None:
    with (
        ImageOrigin(image_file, drip=0.05) as slow,  # 20 B/s, under the 1 KiB/s floor
        ImageOrigin(image_file) as fast,
    ):
        vms = node.start(cache_settings(**FLOOR), create_workers=3, per_source=2, attempts=3)
        slow_tasks = [create(slow.url_for(f"slow-{i}.raw")) for i in range(3)]
        for task in slow_tasks:
            vms.submit(task)
        wait_for("two slow downloads", lambda: slow.active == 2)
        small = create(fast.url_for("small.raw"))
        vms.submit(small)
        done = node.wait_outcome(small.id)
        # The small VM is done while both slow downloads still run, and the third
        # slow VM waited in line for its source without holding the free worker.
        assert done.status == "success", done
        assert slow.active == 2
        assert slow.hits.total() == 2
        assert [node.outcome(t.id) for t in slow_tasks] == [None, None, None]

        failed = [node.wait_outcome(t.id) for t in slow_tasks]
    for update in failed:
        assert update.status == "failed"
        assert update.error is not None
        assert update.error["code"] == "download_too_slow", update.error
        details = update.error["details"]
        assert details["retryable"] is False
        assert details["rate_bytes_per_second"] < 1024
        assert details["window_seconds"] >= 1.5
        assert details["min_rate_window_seconds"] == 1.5
        assert "below the minimum of 1 KiB/s averaged over 1.5s" in update.error["message"]
        assert (update.attempt, update.max_attempts) == (1, 3)  # not retried
    assert slow.hits.total() == 3  # one GET per slow VM: none was retried
    assert node.leftovers() == ["small.raw", "small.raw.sha256", "small.raw.source"]
    for task in slow_tasks:
        assert not (node.root / "vms" / task.args["vm_id"]).exists()


def test_a_source_that_stalls_after_its_headers_fails_its_vm(node: Node, image_file: Path) -> None:
    with ImageOrigin(image_file, stall=True) as stalled:
        vms = node.start(cache_settings(**FLOOR, read_timeout=60.0))
        task = create(stalled.url_for("stalled.raw"))
        vms.submit(task)
        done = node.wait_outcome(task.id)
    assert done.error is not None
    assert done.error["code"] == "download_too_slow"
    assert done.error["details"]["rate_bytes_per_second"] == 0
    assert done.error["details"]["bytes_done"] == 0
    assert "sent 0 bytes in the last" in done.error["message"]
    assert node.leftovers() == []


def test_progress_reports_bytes_and_the_rate(node: Node, tmp_path: Path) -> None:
    path = tmp_path / "steady.raw"
    path.write_bytes(os.urandom(2048))
    with ImageOrigin(path, drip=0.001) as steady:  # under 1000 B/s: about 2.5 s
        vms = node.start(cache_settings(min_rate_bytes_per_second=0))
        task = create(steady.url_for("steady.raw"))
        vms.submit(task)
        assert node.wait_outcome(task.id).status == "success"
    running = [u for u in node.reporter.of(task.id) if u.status == "running"]
    assert {(u.attempt, u.max_attempts) for u in running} == {(1, 3)}
    download = [u.result for u in running if u.result and u.result["phase"] == "download"]
    rates = [r["bytes_per_second"] for r in download if "bytes_per_second" in r]
    assert rates, download[-1]
    assert all(r > 0 for r in rates)
    assert download[-1]["bytes_done"] == 2048


@pytest.mark.parametrize(
    ("host", "kind"),
    [("127.0.0.1", "loopback"), ("169.254.1.1", "link-local"), ("[::1]", "loopback")],
)
def test_loopback_and_link_local_fail_at_once_naming_the_key(
    node: Node, image_file: Path, host: str, kind: str
) -> None:
    with ImageOrigin(image_file) as server:
        vms = node.start(ImageCacheSettings(), attempts=3)  # the default policy
        url = server.url_for("local.raw").replace("127.0.0.1", host)
        task = create(url)
        vms.submit(task)
        done = node.wait_outcome(task.id)
        assert server.hits.total() == 0
    assert done.error is not None
    assert done.error["code"] == "image_url_forbidden"
    message = done.error["message"]
    assert f"a {kind} address is not allowed" in message
    assert "set images.allow_loopback_and_link_local: true in the agent's config" in message
    assert "images.allowed_networks" in message
    assert done.error["details"]["retryable"] is False
    assert done.error["details"]["config_keys"] == [
        "images.allow_loopback_and_link_local",
        "images.allowed_networks",
    ]
    assert (done.attempt, done.max_attempts) == (1, 3)
    assert len([u for u in node.reporter.of(task.id) if u.progress == 0]) >= 1
    assert node.leftovers() == []


def test_metadata_names_only_allowed_networks(node: Node) -> None:
    vms = node.start(ImageCacheSettings(allow_loopback_and_link_local=True))
    task = create("http://169.254.169.254/latest/x.raw")
    vms.submit(task)
    done = node.wait_outcome(task.id)
    assert done.error is not None
    assert done.error["code"] == "image_url_forbidden"
    assert (
        "only images.allowed_networks in the agent's config can open it" in (done.error["message"])
    )
    assert done.error["details"]["config_keys"] == ["images.allowed_networks"]


def test_the_same_loopback_url_works_when_the_key_allows_it(node: Node, image_file: Path) -> None:
    with ImageOrigin(image_file) as server:
        allowed = ImageCacheSettings(allow_loopback_and_link_local=True)
        vms = node.start(allowed)
        task = create(server.url_for("local.raw"))
        vms.submit(task)
        done = node.wait_outcome(task.id)
    assert done.status == "success", done.error
    assert (node.root / "vms" / task.args["vm_id"] / "disk.raw").read_bytes() == (
        image_file.read_bytes()
    )


def test_a_retryable_failure_is_retried_with_the_attempts_reported(node: Node) -> None:
    # A bound socket that never listens: every connection is refused
    # (download_failed), and no other test can take the port meanwhile, as it
    # could after closing a server's socket.
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        # The outbox coalesces progress: a try's `running` report that is not sent
        # before the next try's replaces it is gone, by design. A pause between tries
        # gives each one time to reach the control plane, as it has on a real node.
        vms = node.start(cache_settings(), attempts=3, retry_delay=0.25)
        task = create(f"http://127.0.0.1:{refusing.getsockname()[1]}/gone.raw")
        vms.submit(task)
        done = node.wait_outcome(task.id)
    assert done.error is not None
    assert done.error["code"] == "download_failed"
    assert (done.attempt, done.max_attempts) == (3, 3)
    tries = sorted({u.attempt or 0 for u in node.reporter.of(task.id)})  # 0: no attempt sent
    assert tries == [1, 2, 3]

"""Cache eviction on real pools (``images.evict``, ``report.PoolState``): real entries
fetched from a real HTTP origin into a real pool, and a tmpfs of fixed size for "the pool
runs low on space" (root only).

The rules are ``domain.cache``'s (tested there, pure); here: what the agent removes and
keeps on disk, what it reports, and that a removal cut short leaves an entry that is
simply fetched again."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from otherix.agent.fs import ProtectedRoots
from otherix.agent.images import ImageCache, ImageCacheSettings, KeyedLocks
from otherix.agent.pools import PoolReconciler
from otherix.agent.report import PoolState
from otherix.agent.tasks import PRUNE, execute
from otherix.models.heartbeat import AgentTask, DeclaredDisk, DeclaredPool
from support.images import ImageOrigin

MIB = 1024 * 1024
POOL = "/var/lib/otherix/pools/p1"
HOUR = 3600


def _mount_tmpfs(target: Path, size: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")


class Node:
    """A pool p1 on a tmpfs of ``size``, its real image cache and its report state."""

    def __init__(self, tmp_path: Path, origin: ImageOrigin, size: str = "64M") -> None:
        if os.geteuid() != 0:
            pytest.skip("needs root to mount a tmpfs")
        self.host = tmp_path / "host"
        self.mnt = Path(str(self.host) + "/var/lib/otherix/pools")
        _mount_tmpfs(self.mnt, size)
        protected = ProtectedRoots()
        settings = ImageCacheSettings(
            allowed_networks=("127.0.0.1/32",), space_margin_bytes=0, progress_interval=0.0
        )
        self.cache = ImageCache(settings, locks=KeyedLocks(), protected=protected)
        self.running: set[str] = set()
        self.state = PoolState(
            PoolReconciler(protected=protected),
            allowed_prefixes=["/var/lib/otherix/pools/"],
            host_root=self.host,
            images=self.cache,
            running=lambda: set(self.running),
        )
        self.origin = origin
        self.root = Path(str(self.host) + POOL)
        self.disks: list[DeclaredDisk] = []
        self.config: dict[str, Any] = {}
        self.reconcile()

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.mnt)], check=False)

    def declared(self) -> DeclaredPool:
        return DeclaredPool(
            name="p1", type="local_dir", path=POOL, config=self.config, disks=self.disks
        )

    def reconcile(self) -> None:
        self.state.reconcile([self.declared()])

    def fetch(self, name: str, size: int = MIB, used_hours_ago: float = 0) -> str:
        """Put ``name`` in the cache; backdate its last use. Its sha256."""
        body = os.urandom(size)
        self.cache.ensure_image(self.root, self.origin.serve(f"/{name}", body))
        sidecar = self.root / "images" / f"{name}.sha256"
        when = time.time() - used_hours_ago * HOUR
        os.utime(sidecar, (when, when))
        return hashlib.sha256(body).hexdigest()

    def cached(self) -> list[str]:
        return sorted(i.name for i in self.cache.list_images(self.root))

    def files(self) -> list[str]:
        return sorted(os.listdir(self.root / "images"))

    def report(self) -> Any:
        [report] = self.state.reports
        return report


@pytest.fixture
def origin() -> Iterator[ImageOrigin]:
    with ImageOrigin() as o:
        yield o


@pytest.fixture
def node(tmp_path: Path, origin: ImageOrigin) -> Iterator[Node]:
    n = Node(tmp_path, origin)
    try:
        yield n
    finally:
        n.close()


def test_over_max_bytes_unused_entries_go_lru_first_and_a_running_vms_image_stays(
    node: Node,
) -> None:
    used = node.fetch("used.img", used_hours_ago=30)  # the oldest, but a running VM's image
    node.fetch("old.img", used_hours_ago=20)
    node.fetch("mid.img", used_hours_ago=10)
    node.fetch("new.img", used_hours_ago=2)
    vm = str(uuid.uuid4())
    node.disks = [DeclaredDisk(id="d1", vm_id=vm, file_path=f"{POOL}/vms/{vm}/disk.raw",
                               image_sha256=used)]  # fmt: skip
    node.running = {vm}
    node.config = {"cache": {"max_bytes": 2 * MIB, "min_free_percent": 0}}
    node.reconcile()
    # 4 MiB cached, 2 MiB allowed: the two least recently used that nothing needs go
    assert node.cached() == ["new.img", "used.img"]
    assert node.files() == sorted(
        f"{n}{s}" for n in ("new.img", "used.img") for s in ("", ".sha256", ".source")
    )
    report = node.report()
    assert [i.name for i in report.images] == ["new.img", "used.img"]
    assert [(e.image, e.reason) for e in report.evictions] == [
        ("old.img", "max_bytes"),
        ("mid.img", "max_bytes"),
    ]
    assert all(e.size_bytes == MIB for e in report.evictions)
    # the VM stops: its image may go too now
    node.running = set()
    node.config = {"cache": {"max_bytes": MIB, "min_free_percent": 0}}
    node.reconcile()
    assert node.cached() == ["new.img"]


def test_pinned_young_and_backing_entries_stay_over_the_cap(node: Node) -> None:
    node.fetch("pinned.img", used_hours_ago=50)
    node.fetch("backing.img", used_hours_ago=50)
    node.fetch("young.img", used_hours_ago=0.1)  # used minutes ago: under min_age (1h)
    node.fetch("free.img", used_hours_ago=50)
    vm_dir = node.root / "vms" / str(uuid.uuid4())
    vm_dir.mkdir()
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "../../images/backing.img",
         "-F", "raw", str(vm_dir / "disk.qcow2")],
        check=True,
    )  # fmt: skip
    node.config = {"cache": {"max_bytes": 0, "min_free_percent": 0, "pinned": ["pinned.img"]}}
    node.reconcile()
    assert node.cached() == ["backing.img", "pinned.img", "young.img"]
    assert [e.image for e in node.report().evictions] == ["free.img"]


def test_a_pool_short_of_space_evicts_until_the_free_floor_is_back(
    tmp_path: Path, origin: ImageOrigin
) -> None:
    node = Node(tmp_path, origin, size="32M")
    try:
        for i in range(6):
            node.fetch(f"img{i}.img", size=3 * MIB, used_hours_ago=10 + i)
        filler = node.root / "other-data"  # not ours: the pool fills up anyway
        filler.write_bytes(b"\0" * (11 * MIB))
        st = os.statvfs(node.root)
        assert st.f_bavail * st.f_frsize < 0.25 * st.f_blocks * st.f_frsize
        node.config = {"cache": {"min_free_percent": 25}}
        node.reconcile()
        st = os.statvfs(node.root)
        free, capacity = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
        assert free >= 0.25 * capacity
        report = node.report()
        gone = [e.image for e in report.evictions]
        assert gone  # the oldest went first, and only as many as needed
        assert gone == [f"img{i}.img" for i in range(5, 5 - len(gone), -1)]
        assert len(node.cached()) == 6 - len(gone) > 0
        assert {e.reason for e in report.evictions} == {"min_free"}
    finally:
        node.close()


def test_nothing_is_evicted_with_the_default_limits_while_there_is_room(node: Node) -> None:
    for i in range(3):
        node.fetch(f"img{i}.img", used_hours_ago=100)
    node.reconcile()
    assert len(node.cached()) == 3
    assert node.report().evictions is None


def test_an_eviction_cut_short_after_the_sidecar_leaves_an_entry_fetched_again(
    node: Node, origin: ImageOrigin
) -> None:
    body = os.urandom(MIB)
    url = origin.serve("/cut.img", body)
    node.cache.ensure_image(node.root, url)
    # the first step of a removal, then a crash: no sidecar, the bytes still there
    (node.root / "images" / "cut.img.sha256").unlink()
    assert node.cached() == []
    gets = len(origin.gets("/cut.img"))
    again = node.cache.ensure_image(node.root, url)
    assert len(origin.gets("/cut.img")) == gets + 1
    assert again.sha256 == hashlib.sha256(body).hexdigest()
    assert (node.root / "images" / "cut.img").read_bytes() == body


def test_a_use_is_recorded_as_the_entry_last_use(node: Node) -> None:
    node.fetch("a.img", used_hours_ago=10)
    sidecar = node.root / "images" / "a.img.sha256"
    before = sidecar.stat().st_mtime
    node.cache.ensure_image(node.root, node.origin.url_for("/a.img"))  # a hit
    assert sidecar.stat().st_mtime > before + 9 * HOUR
    [image] = node.cache.list_images(node.root)
    seen = datetime.fromisoformat(str(image.last_used_at).replace("Z", "+00:00"))
    assert abs(seen.timestamp() - datetime.now(UTC).timestamp()) < 60


def test_prune_task_dry_run_lists_and_then_evicts(node: Node) -> None:
    node.fetch("a.img", used_hours_ago=5)
    node.fetch("b.img", used_hours_ago=6)
    node.fetch("fresh.img", used_hours_ago=0)
    dry = execute(node.state, AgentTask(id="t1", type=PRUNE, args={"pool": "p1",
                  "dry_run": True}), datetime.now(UTC))  # fmt: skip
    assert dry.status == "success"
    assert dry.result is not None
    assert [e["image"] for e in dry.result["evicted"]] == ["b.img", "a.img"]
    assert dry.result["bytes"] == 2 * MIB
    assert len(node.cached()) == 3  # nothing removed
    done = execute(node.state, AgentTask(id="t2", type=PRUNE, args={"pool": "p1"}),
                   datetime.now(UTC))  # fmt: skip
    assert done.status == "success"
    assert node.cached() == ["fresh.img"]
    assert [e.reason for e in node.report().evictions] == ["prune", "prune"]
    unknown = execute(node.state, AgentTask(id="t3", type=PRUNE, args={"pool": "nope"}),
                      datetime.now(UTC))  # fmt: skip
    assert unknown.status == "failed"
    assert unknown.error is not None
    assert unknown.error["code"] == "not_found"

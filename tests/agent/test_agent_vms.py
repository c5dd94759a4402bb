"""VMs end to end: real control plane, real ``otherix-agent`` process, real image origin.

The origin (``support.images.ImageOrigin``) serves qcow2 files made with ``qemu-img``;
the agent may reach it because its config sets
``images.allow_loopback_and_link_local: true``. A VM is created through the
API, its ``vm.create`` task reaches the agent through the watch, and the test
checks what a user sees (VM phase and reason, the pool's ``images``) and what
is on the node's disk.

As root each node has its own mount namespace (``/var/lib/otherix`` is the
node's own directory); otherwise the harness re-roots the pool paths.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.clustervms import Pool, create_vm, delete_vm, one_node, wait_phase
from support.harness import AgentProc, Cluster, wait_until
from support.images import ImageOrigin, qcow2

pytestmark = pytest.mark.slow

MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def origin() -> Iterator[ImageOrigin]:
    with ImageOrigin() as o:
        yield o


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("vms")
    # Heartbeats every 30 s: tasks, outcomes and the image inventory all travel
    # through the watch (a finished task bumps the node's desired revision).
    overrides = {"agents.heartbeat_interval": 30}
    config = {"images": {"allow_loopback_and_link_local": True}}
    with one_node(tmp, overrides=overrides, agent_config=config) as (c, _node):
        yield c


@pytest.fixture
def node(cluster: Cluster) -> AgentProc:
    n = cluster.nodes["node-a"]
    if not n.alive:
        n.start()
    return n


def test_vms_fill_the_cache_once_and_delete_cleanly(
    cluster: Cluster, node: AgentProc, origin: ImageOrigin, tmp_path: Path
) -> None:
    image = qcow2(tmp_path, "base.qcow2")
    origin.serve("/img/base.qcow2", image)
    url = origin.url_for("/img/base.qcow2")
    pool = Pool(cluster, node, "vmp")

    vm1 = create_vm(cluster, "vm-1", pool, url)
    done = wait_phase(cluster, "vm-1", "stopped")
    # the harness's agents run no VMs: the start at the end of the create says why
    assert done["status"]["state"] == "failed"
    assert done["status"]["runtime"]["detail"] == "this node runs no VMs: vms.enabled is false"
    cached = pool.root / "images" / "base.qcow2"
    assert cached.read_bytes() == image
    assert (pool.root / "images" / "base.qcow2.sha256").read_text() == sha(image)
    disk = pool.root / "vms" / vm1["id"] / "disk.qcow2"
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(disk)],
            check=True,
            capture_output=True,
            timeout=30,
        ).stdout
    )
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 64 * MiB
    assert "backing-filename" not in info  # a full copy, never an overlay on the cache
    [root_disk] = done["disks"]
    assert root_disk["file_path"] == f"{pool.path}/vms/{vm1['id']}/disk.qcow2"
    assert root_disk["virtual_size_bytes"] == 64 * MiB
    assert root_disk["image_sha256"] == sha(image)

    def listed() -> list[dict[str, Any]]:
        return pool.images()

    [entry] = wait_until(listed, 10, "the pool view lists the cached image")
    assert (entry["name"], entry["sha256"], entry["size_bytes"], entry["format"]) == (
        "base.qcow2",
        sha(image),
        len(image),
        "qcow2",
    )

    create_vm(cluster, "vm-2", pool, url, disk_gib=1)
    second = wait_phase(cluster, "vm-2", "stopped")
    assert second["disks"][0]["virtual_size_bytes"] == 1 << 30
    assert origin.hits["/img/base.qcow2"] == 1  # the second VM hit the cache

    delete_vm(cluster, "vm-1")
    assert not (pool.root / "vms" / vm1["id"]).exists()
    assert cached.is_file()  # the cache is kept
    assert (pool.root / "vms" / second["id"] / "disk.qcow2").is_file()
    r = pool.delete()
    assert r.status_code == 409, r.text  # vm-2 still has a disk here
    delete_vm(cluster, "vm-2")
    assert pool.delete().status_code == 204  # the image cache is not a delete blocker
    assert pool.scratch() == []


def _allocated_below(path: Path) -> int:
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def test_the_pool_view_shows_what_the_vm_disk_and_the_cache_take(
    cluster: Cluster, node: AgentProc, origin: ImageOrigin, tmp_path: Path
) -> None:
    """Issue 16: after a create the agent re-measures the pool at once (not at its
    usage interval), and the view shows the disk's and the cache's bytes."""
    image = qcow2(tmp_path, "usage.qcow2", data_mib=2)
    origin.serve("/img/usage.qcow2", image)
    pool = Pool(cluster, node, "usep")
    vm = create_vm(cluster, "vm-usage", pool, origin.url_for("/img/usage.qcow2"), disk_gib=1)
    wait_phase(cluster, "vm-usage", "stopped")

    def measured() -> dict[str, Any] | None:
        usage = pool.view()["usage"]
        return usage if usage and usage["vm_disk_bytes"] > 0 else None

    usage = wait_until(measured, 20, "the pool view shows the VM disk's bytes")
    disk = pool.root / "vms" / vm["id"] / "disk.qcow2"
    assert usage["vm_disk_bytes"] == disk.lstat().st_blocks * 512
    assert usage["vm_provisioned_bytes"] == 1 << 30
    # the cache holds the image (dense: its size, rounded up to whole blocks) and its
    # two small metadata files; that is what it takes on the filesystem
    cached = pool.root / "images" / "usage.qcow2"
    assert cached.stat().st_size == len(image)
    assert usage["image_cache_bytes"] == _allocated_below(pool.root / "images")
    assert len(image) <= usage["image_cache_bytes"] < len(image) + 64 * 1024
    assert usage["scratch_bytes"] == 0
    view = pool.view()
    assert usage["overcommit_ratio"] == round((1 << 30) / view["capacity_bytes"], 4)
    assert usage["other_bytes"] is not None

    delete_vm(cluster, "vm-usage")

    def emptied() -> dict[str, Any] | None:
        after = pool.view()["usage"]
        return after if after["vm_disk_bytes"] == 0 else None

    after = wait_until(emptied, 20, "the pool view shows the disk gone")
    assert after["vm_provisioned_bytes"] == 0
    assert after["image_cache_bytes"] == usage["image_cache_bytes"]  # the cache is kept
    assert pool.delete().status_code == 204


def test_a_pinned_sha_mismatch_fails_and_writes_nothing(
    cluster: Cluster, node: AgentProc, origin: ImageOrigin, tmp_path: Path
) -> None:
    origin.serve("/img/pinned.qcow2", qcow2(tmp_path, "pinned.qcow2"))
    pool = Pool(cluster, node, "pinp")
    vm = create_vm(
        cluster, "vm-pinned", pool, origin.url_for("/img/pinned.qcow2"), image_sha256="0" * 64
    )
    failed = wait_phase(cluster, "vm-pinned", "error")
    assert failed["status"]["reason"] == "checksum_mismatch"
    assert "expected " + "0" * 64 in failed["status"]["message"]
    assert sorted(p.name for p in (pool.root / "images").iterdir()) == []
    assert pool.scratch() == []
    assert not (pool.root / "vms" / vm["id"]).exists()
    assert pool.images() == []
    delete_vm(cluster, "vm-pinned")
    assert pool.delete().status_code == 204


def test_an_agent_killed_mid_download_finishes_the_create_after_restart(
    cluster: Cluster, node: AgentProc, origin: ImageOrigin, tmp_path: Path
) -> None:
    image = qcow2(tmp_path, "slow.qcow2", data_mib=8)
    path = "/img/slow.qcow2"
    origin.serve(path, image, chunk_delay=0.05)  # ~1.3 MiB/s: the download takes seconds
    pool = Pool(cluster, node, "killp")
    vm = create_vm(cluster, "vm-slow", pool, origin.url_for(path))
    wait_phase(cluster, "vm-slow", "creating")
    wait_until(lambda: origin.sent[path] >= 1 * MiB, 20, "the download under way")
    wait_until(pool.scratch, 5, "a scratch file")

    node.kill(signal.SIGKILL)
    leftovers = pool.scratch()
    assert leftovers  # the killed download's partial file ...
    assert origin.sent[path] < len(image)
    assert not (pool.root / "images" / "slow.qcow2").exists()  # ... is never an entry
    assert pool.images() == []

    origin.routes[path].chunk_delay = 0.0
    origin.gate.clear()  # hold the next request before its headers
    node.start()
    wait_until(lambda: origin.hits[path] >= 2, 20, "the download started again")
    assert pool.scratch() == []  # swept when the pool was registered again
    origin.gate.set()

    done = wait_phase(cluster, "vm-slow", "stopped")
    assert done["disks"][0]["image_sha256"] == sha(image)
    assert (pool.root / "images" / "slow.qcow2").read_bytes() == image
    assert (pool.root / "vms" / vm["id"] / "disk.qcow2").is_file()
    assert pool.scratch() == []
    assert wait_until(
        lambda: [i["name"] for i in pool.images()] == ["slow.qcow2"], 10, "image listed"
    )
    assert origin.hits[path] == 2
    delete_vm(cluster, "vm-slow")
    assert pool.delete().status_code == 204


def test_sigterm_mid_download_stops_promptly_and_the_create_resumes(
    cluster: Cluster, node: AgentProc, origin: ImageOrigin, tmp_path: Path
) -> None:
    image = qcow2(tmp_path, "term.qcow2", data_mib=4)
    path = "/img/term.qcow2"
    origin.serve(path, image, chunk_delay=0.1)
    pool = Pool(cluster, node, "termp")
    create_vm(cluster, "vm-term", pool, origin.url_for(path))
    wait_until(lambda: origin.sent[path] >= 256 * 1024, 20, "the download under way")
    started = time.monotonic()
    assert node.stop(timeout=10) == 0
    assert time.monotonic() - started < 8  # the download does not hold up the shutdown
    assert not (pool.root / "images" / "term.qcow2").exists()
    origin.routes[path].chunk_delay = 0.0
    node.start()
    done = wait_phase(cluster, "vm-term", "stopped")
    assert done["disks"][0]["image_sha256"] == sha(image)
    assert pool.scratch() == []
    delete_vm(cluster, "vm-term")
    assert pool.delete().status_code == 204


def test_loopback_and_link_local_urls_are_refused_at_once_naming_the_key(
    cluster: Cluster, node: AgentProc, origin: ImageOrigin, tmp_path: Path
) -> None:
    """A node with the default address policy refuses them after one attempt, and says
    which agent key opens them; the same URL works on a node whose config allows it."""
    strict = cluster.nodes.get("node-strict") or cluster.add_node(
        "node-strict", config={"images": {"allow_loopback_and_link_local": False}}
    )
    cluster.wait_node_status(strict.name, "ready")
    origin.serve("/img/local.qcow2", qcow2(tmp_path, "local.qcow2"))
    url = origin.url_for("/img/local.qcow2")
    refusing = Pool(cluster, strict, "strictp")
    cases = {
        "vm-loopback": (url, "loopback"),
        "vm-link-local": ("http://169.254.1.1/x.qcow2", "link-local"),
    }
    for name, (image_url, _kind) in cases.items():
        create_vm(cluster, name, refusing, image_url)
    for name, (_url, kind) in cases.items():
        failed = wait_phase(cluster, name, "error")
        assert failed["status"]["reason"] == "image_url_forbidden"
        message = failed["status"]["message"]
        assert f"a {kind} address is not allowed" in message
        assert "images.allow_loopback_and_link_local: true" in message
        r = cluster.admin.get(f"/v1/tasks/{failed['status']['task_id']}")
        task = r.json()
        assert (task["status"], task["attempts"], task["max_attempts"]) == ("failed", 1, 3)
        assert task["error"]["code"] == "image_url_forbidden"
        assert task["error"]["details"]["retryable"] is False
    assert origin.hits["/img/local.qcow2"] == 0
    assert refusing.scratch() == []

    allowing = Pool(cluster, node, "allowp")  # node-a: allow_loopback_and_link_local: true
    create_vm(cluster, "vm-loopback-ok", allowing, url)
    done = wait_phase(cluster, "vm-loopback-ok", "stopped")
    task = cluster.admin.get(f"/v1/tasks/{done['status']['task_id']}").json()
    assert (task["status"], task["attempts"], task["max_attempts"]) == ("success", 1, 3)
    for name in (*cases, "vm-loopback-ok"):
        delete_vm(cluster, name)
    assert refusing.delete().status_code == 204
    assert allowing.delete().status_code == 204

"""Pool identity under real faults: a pool disk unmounted and mounted back, a loop
device renumbered, a copy mounted in its place, a directory removed, a foreign
marker, a VM disk file deleted, and ``otherix pool reinit`` (root only).

One control plane and one ``otherix-agent`` in its own mount namespace (the
harness binds ``<node>/root`` on the node's ``/var/lib/otherix``). A pool root
that is a real mount is mounted *inside the agent's mount namespace* with
``nsenter -t <agent pid> -m mount …``: the host's view of the same directory
(``<node>/root/pools/<name>``) is then the empty mount point underneath, which
is exactly where an agent that re-creates a pool would write. Two kinds:

- tmpfs: a tmpfs mounted on a staging directory inside the namespace and
  bind-mounted on the pool root, so "unmount" (of the bind) keeps its bytes
  for "mount it back";
- ext4 on a loop device (``losetup``), unmounted and mounted again, then
  attached to another loop device (another ``st_dev``, same filesystem), then
  replaced by a copy on another ext4 (``cp -a`` of the pool, marker included).

Each VM disk's bytes are hashed (sha256, read inside the namespace) before the
fault and after the recovery. "Nothing created" is checked on the host view of
the mount point after the agent has logged at least three more failed passes.
Every loop device is detached at the end; the mounts die with the namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from agenthelpers import (
    one_node,
)

from otherix.agent import marker as markers
from otherix.agent.poolplan import Device
from support.cli import cli_env, run
from support.clustervms import Pool, create_vm, get_vm, wait_phase
from support.harness import AgentProc, Cluster, wait_until
from support.images import ImageOrigin, qcow2

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for mounts and mount namespaces"),
    pytest.mark.skipif(shutil.which("nsenter") is None, reason="needs nsenter"),
]

MARKER = ".otherix-pool.json"
POOLS = "/var/lib/otherix/pools"
PASSES = 3  # failed passes the agent must log before "nothing was created" is checked
#: the origin is on loopback; the pools are small mounts, so a small free-space margin
AGENT: dict[str, Any] = {
    "images": {
        "allow_loopback_and_link_local": True,
        "read_timeout": 20,
        "space_margin_bytes": 1 << 20,
    },
    "tasks": {"retry_delay": 0.5},
}


@dataclass
class Env:
    cluster: Cluster
    node: AgentProc
    tmp: Path
    image_url: str
    cli: dict[str, str]
    loops: list[str] = field(default_factory=list)


def _detach(loop: str) -> None:
    subprocess.run(["losetup", "-d", loop], capture_output=True, check=False, timeout=30)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("identity")
    image = qcow2(tmp, "tiny.qcow2", data_mib=1)
    loops: list[str] = []
    try:
        with (
            ImageOrigin() as origin,
            one_node(tmp, "node-id", agent_config=AGENT) as (cluster, node),
        ):
            assert node.mount_ns, "the mounts are the node's own only with a mount namespace"
            origin.serve("/img/tiny.qcow2", image)
            token = cluster.admin.headers["authorization"].split()[1]
            cli = cli_env(str(cluster.admin.base_url), token, tmp)
            yield Env(cluster, node, tmp, origin.url_for("/img/tiny.qcow2"), cli, loops)
    finally:
        for loop in loops:  # the namespace is gone: nothing holds them any more
            _detach(loop)
        for line in subprocess.run(
            ["losetup", "-a"], capture_output=True, text=True, check=False
        ).stdout.splitlines():
            assert str(tmp) not in line, f"loop device left behind: {line}"


# -- helpers ------------------------------------------------------------------------------


def ns(env: Env, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command in the agent's mount namespace."""
    assert env.node.proc is not None
    cmd = ["nsenter", "-t", str(env.node.proc.pid), "-m", "--", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done


def umount(env: Env, path: str) -> None:
    # The agent holds a pool root open for the few milliseconds of a pass: retry on EBUSY.
    wait_until(lambda: ns(env, "umount", path, check=False).returncode == 0, 20, f"umount {path}")


def sha_in_ns(env: Env, path: str) -> str:
    return ns(env, "sha256sum", path).stdout.split()[0]


def failed_passes(env: Env, name: str) -> int:
    return env.node.logs().count(f"pool reconcile failed pool={name} ")


class PoolRef:
    """A pool created through the API that may never become ready (no waiting)."""

    def __init__(self, cluster: Cluster, name: str, pool_id: str) -> None:
        self.cluster, self.name, self.id = cluster, name, pool_id

    def view(self) -> dict[str, Any]:
        r = self.cluster.admin.get(f"/v1/storage-pools/{self.id}")
        r.raise_for_status()
        return dict(r.json())


def wait_failed(pool: Pool | PoolRef, reason: str, timeout: float = 30) -> dict[str, Any]:
    return wait_until(
        lambda: (
            (v := pool.view())["reconciliation_status"] == "failed"
            and v["reconciliation_reason"] == reason
            and v
        ),
        timeout,
        f"pool {pool.name} failed with {reason}",
    )


def wait_ready(pool: Pool, timeout: float = 30) -> dict[str, Any]:
    return wait_until(
        lambda: (v := pool.view())["reconciliation_status"] == "ready" and v,
        timeout,
        f"pool {pool.name} ready",
    )


def more_failed_passes(env: Env, name: str, n: int = PASSES) -> None:
    start = failed_passes(env, name)
    wait_until(lambda: failed_passes(env, name) >= start + n, 30, f"{n} more failed passes")


def more_heartbeats(env: Env, n: int = PASSES) -> None:
    """Wait for ``n`` more heartbeats: the agent reconciles once per heartbeat interval."""
    seen: set[str] = set()

    def beat() -> bool:
        seen.add(str(env.cluster.node(env.node.name)["last_heartbeat_at"]))
        return len(seen) > n

    wait_until(beat, 30, f"{n} more heartbeats")


def host_entries(path: Path) -> list[str] | None:
    """The host's view of a directory (None: it does not exist)."""
    return sorted(os.listdir(path)) if path.exists() else None


def make_vm(env: Env, pool: Pool, name: str) -> tuple[dict[str, Any], str]:
    """A VM on the pool (through the API, image from the origin); its disk's path and sha."""
    create_vm(env.cluster, name, pool, env.image_url)
    wait_phase(env.cluster, name, "stopped", timeout=60)
    vm = get_vm(env.cluster, name)
    [disk] = vm["disks"]
    return vm, disk["file_path"]


def vm_status(env: Env, name: str) -> dict[str, Any]:
    return dict(get_vm(env.cluster, name)["status"])


def mountpoint(env: Env, name: str) -> Path:
    root = env.node.host_path(f"{POOLS}/{name}")
    root.mkdir(parents=True, exist_ok=True)
    return root


# -- (a) tmpfs: unmount, mount back -------------------------------------------------------


@pytest.mark.timeout(240)
def test_unmounted_tmpfs_pool_fails_creates_nothing_and_comes_back(env: Env, reliability):
    name = "tmpfs1"
    host_view = mountpoint(env, name)
    stage = env.tmp / "stage-tmpfs1"
    stage.mkdir()
    ns(env, "mount", "-t", "tmpfs", "-o", "size=64m,mode=0750", "tmpfs", str(stage))
    ns(env, "mount", "--bind", str(stage), f"{POOLS}/{name}")
    pool = Pool(env.cluster, env.node, name)
    assert json.loads(ns(env, "cat", f"{POOLS}/{name}/{MARKER}").stdout)["pool_id"] == pool.id
    assert host_entries(host_view) == []  # the marker is on the tmpfs, not underneath
    _vm, disk = make_vm(env, pool, "vm-tmpfs")
    before = sha_in_ns(env, disk)
    checked = lost = 0

    umount(env, f"{POOLS}/{name}")
    view = wait_failed(pool, "pool_identity_mismatch")
    assert "marker missing: is the disk mounted?" in view["reconciliation_error"]
    more_failed_passes(env, name)
    created = host_entries(host_view)
    checked += 1
    lost += bool(created)
    assert created == [], f"the agent created {created} under the mount point"
    assert view["vm_disks"] == {"total": 1, "missing": 1}
    status = vm_status(env, "vm-tmpfs")
    assert (status["phase"], status["reason"]) == ("stopped", "disk_missing")
    assert status["details"]["cause"] == "pool_failed"
    # what a user reads
    listed = run(env.cli, "vm", "list").stdout
    assert any("vm-tmpfs" in line and "disk_missing" in line for line in listed.splitlines())
    shown = run(env.cli, "pool", "get", pool.id).stdout
    assert "reconciliation_reason: pool_identity_mismatch" in shown
    assert "vm_disks: 1 (1 missing)" in shown
    assert "disk missing" in run(env.cli, "vm", "get", "vm-tmpfs").stdout
    # a pool holding VM disks cannot be reinitialised
    refused = run(env.cli, "pool", "reinit", pool.id, "--force", ok=False)
    assert "holds 1 VM disk(s)" in refused.stderr
    assert "vm-tmpfs" in refused.stderr
    assert pool.view()["reconciliation_reason"] == "pool_identity_mismatch"

    ns(env, "mount", "--bind", str(stage), f"{POOLS}/{name}")
    view = wait_ready(pool)
    assert view["reconciliation_reason"] is None
    assert view["vm_disks"] == {"total": 1, "missing": 0}
    wait_until(lambda: vm_status(env, "vm-tmpfs")["reason"] is None, 10, "vm disk back")
    after = sha_in_ns(env, disk)
    checked += 1
    lost += after != before
    reliability.record(
        "pool identity: pool disk unmounted and mounted back (tmpfs)",
        injected=1,
        survived=int(not created and after == before),
        checked=checked,
        lost=lost,
        detail="failed pool_identity_mismatch, nothing created under the mount point over "
        f"{PASSES}+ passes, VM disk_missing, ready by itself, disk sha256 unchanged",
    )
    assert after == before


# -- (a) ext4 on a loop device: unmount, remount, renumber, a copy in its place ---------------


def _ext4(env: Env, name: str) -> tuple[Path, str]:
    if shutil.which("mkfs.ext4") is None or shutil.which("losetup") is None:
        pytest.skip("needs mkfs.ext4 and losetup")
    image = env.tmp / f"{name}.img"
    subprocess.run(["truncate", "-s", "96M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    return image, _attach(env, image)


def _attach(env: Env, image: Path, avoid: str | None = None) -> str:
    done = subprocess.run(
        ["losetup", "-f", "--show", str(image)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"no loop device: {done.stderr.strip()}")
    loop = done.stdout.strip()
    env.loops.append(loop)
    if loop == avoid:  # the same number again: take another one, then let this one go
        other = _attach(env, image)
        _detach(loop)
        return other
    return loop


@pytest.mark.timeout(300)
def test_ext4_pool_unmounted_renumbered_and_replaced_by_a_copy(env: Env, reliability):
    name = "ext4a"
    image, loop = _ext4(env, name)
    host_view = mountpoint(env, name)
    root = f"{POOLS}/{name}"
    ns(env, "mount", loop, root)
    ns(env, "rmdir", f"{root}/lost+found")
    pool = Pool(env.cluster, env.node, name)
    _vm, disk = make_vm(env, pool, "vm-ext4")
    before = sha_in_ns(env, disk)
    marker_dev = json.loads(ns(env, "cat", f"{root}/{MARKER}").stdout)["device"]["st_dev"]
    rows: dict[str, tuple[bool, int, int]] = {}  # fault -> (came through, checked, lost)

    # 1. unmounted: failed, nothing under the mount point; mounted back: ready, same bytes
    umount(env, root)
    wait_failed(pool, "pool_identity_mismatch")
    more_failed_passes(env, name)
    created = host_entries(host_view)
    assert vm_status(env, "vm-ext4")["reason"] == "disk_missing"
    ns(env, "mount", loop, root)
    wait_ready(pool)
    same = sha_in_ns(env, disk) == before
    rows["pool identity: pool disk unmounted and mounted back (ext4 on loop)"] = (
        not created and same,
        2,
        int(bool(created)) + int(not same),
    )
    assert created == [], created
    assert same

    # 2. the same filesystem on another loop device: another st_dev, same f_fsid: accepted
    umount(env, root)
    wait_failed(pool, "pool_identity_mismatch")
    _detach(loop)
    loop = _attach(env, image, avoid=loop)
    ns(env, "mount", loop, root)
    view = wait_ready(pool)
    now_dev = int(ns(env, "stat", "-c", "%d", root).stdout)
    assert now_dev != marker_dev, "the loop device kept its number; the rule was not exercised"
    same = sha_in_ns(env, disk) == before
    rows["pool identity: loop device renumbered (same filesystem)"] = (
        view["reconciliation_reason"] is None and same,
        2,
        int(not same),
    )
    assert same

    # 3. a copy (cp -a, marker included) on another filesystem mounted in its place
    _copy_image, copy_loop = _ext4(env, f"{name}-copy")
    staging = env.tmp / "copy-mnt"
    staging.mkdir()
    ns(env, "mount", copy_loop, str(staging))
    ns(env, "cp", "-a", f"{root}/.", str(staging))
    umount(env, str(staging))
    umount(env, root)
    ns(env, "mount", copy_loop, root)
    view = wait_failed(pool, "pool_device_changed")
    assert "another filesystem holds a copy" in view["reconciliation_error"]
    more_failed_passes(env, name)
    assert vm_status(env, "vm-ext4")["reason"] == "disk_missing"
    copy_listing = sorted(ns(env, "ls", "-A", root).stdout.split())
    umount(env, root)
    created = host_entries(host_view)
    ns(env, "mount", loop, root)
    wait_ready(pool)
    same = sha_in_ns(env, disk) == before
    rows["pool identity: pool disk replaced by a copy on another filesystem"] = (
        not created and same,
        2,
        int(bool(created)) + int(not same),
    )
    assert created == [], created
    assert MARKER in copy_listing
    assert same
    for fault, (ok, checked, lost) in rows.items():
        reliability.record(
            fault,
            injected=1,
            survived=int(ok),
            checked=checked,
            lost=lost,
            detail="ext4 on a loop device mounted in the agent's mount namespace; "
            "VM disk sha256 before/after",
        )


# -- (b) rm -rf, then (e) reinit -------------------------------------------------------------


@pytest.mark.timeout(180)
def test_removed_pool_directory_is_not_recreated_until_reinit(env: Env, reliability):
    pool = Pool(env.cluster, env.node, "gone")
    first = json.loads((pool.root / MARKER).read_text())
    assert first["pool_id"] == pool.id
    # rm -rf may race a pass that is writing its probe ("Directory not empty"): as an
    # operator would, run it again until the directory is gone
    wait_until(
        lambda: subprocess.run(["rm", "-rf", str(pool.root)], capture_output=True).returncode == 0,
        10,
        "rm -rf",
    )
    view = wait_failed(pool, "pool_missing")
    assert "not re-created" in view["reconciliation_error"]
    more_failed_passes(env, "gone")
    recreated = pool.root.exists()
    assert not recreated
    # (e) the admin starts it afresh on purpose
    out = run(env.cli, "pool", "reinit", pool.id, "--force").stdout
    assert f"pool {pool.id} reinitialised" in out
    view = wait_ready(pool)
    assert view["reconciliation_reason"] is None
    second = json.loads((pool.root / MARKER).read_text())
    fresh = second["pool_id"] == pool.id and second["marker_id"] != first["marker_id"]
    assert fresh, (first, second)
    assert host_entries(pool.root) == [MARKER, "images", "scratch", "vms"]
    reliability.record(
        "pool identity: pool directory removed (rm -rf)",
        injected=1,
        survived=int(not recreated),
        checked=PASSES,
        lost=0,
        detail="failed pool_missing, not re-created over 3+ passes",
    )
    reliability.record(
        "pool identity: pool reinit after pool_missing",
        injected=1,
        survived=int(fresh),
        checked=1,
        lost=0,
        detail="otherix pool reinit --force: ready again with a new marker",
    )


# -- (c) foreign markers ------------------------------------------------------------------------


def _foreign_marker(path: str) -> bytes:
    return markers.encode(
        pool_id=str(uuid.uuid4()),
        pool_name="elsewhere",
        cluster_id=str(uuid.uuid4()),
        marker_id=str(uuid.uuid4()),
        path=path,
        device=Device(st_dev=1, fsid=1),
    )


@pytest.mark.timeout(180)
def test_foreign_markers_are_never_adopted(env: Env, reliability):
    # another cluster's pool directory at a new pool's path
    name = "foreign"
    host = mountpoint(env, name)
    data = _foreign_marker(f"{POOLS}/{name}")
    (host / MARKER).write_bytes(data)
    (host / "vms").mkdir()
    (host / "vms" / "theirs.qcow2").write_bytes(b"their bytes")
    r = env.cluster.admin.post(
        "/v1/storage-pools", json={"name": name, "node": env.node.name, "path": f"{POOLS}/{name}"}
    )
    assert r.status_code == 201, r.text
    view = wait_failed(PoolRef(env.cluster, name, r.json()["id"]), "pool_identity_mismatch")
    assert "another cluster" in view["reconciliation_error"]
    more_failed_passes(env, name)
    kept = (host / MARKER).read_bytes() == data and host_entries(host) == [MARKER, "vms"]
    kept = kept and (host / "vms" / "theirs.qcow2").read_bytes() == b"their bytes"
    assert kept, host_entries(host)

    # a known pool whose marker is replaced by another pool's of this cluster
    mine, theirs = Pool(env.cluster, env.node, "mine"), Pool(env.cluster, env.node, "theirs")
    own = (mine.root / MARKER).read_bytes()
    shutil.copyfile(theirs.root / MARKER, mine.root / MARKER)
    view = wait_failed(mine, "pool_identity_mismatch")
    assert f'"theirs" ({theirs.id})' in view["reconciliation_error"]
    more_failed_passes(env, "mine")
    untouched = (mine.root / MARKER).read_bytes() == (theirs.root / MARKER).read_bytes()
    (mine.root / MARKER).write_bytes(own)
    wait_ready(mine)
    reliability.record(
        "pool identity: foreign identity marker",
        injected=2,
        survived=int(kept) + int(untouched),
        checked=2,
        lost=int(not kept) + int(not untouched),
        detail="another cluster's marker at a new pool's path; another pool's marker in a "
        "known pool; never adopted or overwritten, ready again when its own is back",
    )


# -- (d) the disk file alone deleted --------------------------------------------------------------


@pytest.mark.timeout(180)
def test_a_deleted_vm_disk_shows_disk_missing_and_the_pool_stays_ready(env: Env, reliability):
    pool = Pool(env.cluster, env.node, "diskdel")
    vm, disk = make_vm(env, pool, "vm-diskdel")
    make_vm(env, pool, "vm-diskkeep")
    env.node.host_path(disk).unlink()
    wait_until(lambda: vm_status(env, "vm-diskdel")["reason"] == "disk_missing", 30, "disk_missing")
    status = vm_status(env, "vm-diskdel")
    view = pool.view()
    ok = (
        status["details"]["cause"] == "file_missing"
        and view["reconciliation_status"] == "ready"
        and view["vm_disks"] == {"total": 2, "missing": 1}
        and vm_status(env, "vm-diskkeep")["reason"] is None
    )
    wait_until(lambda: env.node.logs().count("vm disk missing") >= 1, 10, "the warning")
    more_heartbeats(env)
    warned = [
        line
        for line in env.node.logs().splitlines()
        if "vm disk missing" in line and vm["id"] in line
    ]
    assert len(warned) == 1, warned
    reliability.record(
        "pool identity: VM disk file deleted",
        injected=1,
        survived=int(ok),
        checked=3,
        lost=0,
        detail="that VM disk_missing (file_missing), the other VM and the pool unaffected; "
        "one warning in the agent log",
    )
    assert ok, (status, view)


@pytest.fixture(autouse=True)
def _agent_alive(env: Env) -> Iterator[None]:
    yield
    with contextlib.suppress(Exception):
        assert env.node.alive, env.node.logs()[-4000:]

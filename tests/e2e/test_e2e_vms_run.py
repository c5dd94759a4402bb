"""VMs run (issue 15's "done when"), on a real cluster from the harness, with the real CLI:

the test guest (``support.guest``: a Debian cloud kernel and a busybox init that counts
its boots on its data partition and prints ``OTHERIX-GUEST-UP boot=N``) is served by the
harness's image server, fills the pool's image cache, becomes the VM's disk on the pool
and boots under QEMU (TCG here) from that disk. The marker is read with ``otherix vm
console``; after stop, start and restart the counter read off the pool's disk file is 3,
so the disk on the pool is the disk the VM runs from. Pool delete is refused while the
VM runs; ``vm delete`` of a running VM is refused unless ``--force``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from support import guest
from support.cli import cli_env, run
from support.harness import FAST, Cluster, ControlPlane, wait_until
from support.images import ImageOrigin

pytestmark = [pytest.mark.slow]  # four TCG boots of a real kernel

AGENT = {"images": {"allow_loopback_and_link_local": True}}


def _vm(env: dict[str, str], name: str) -> dict[str, Any]:
    return dict(json.loads(run(env, "vm", "get", name, "-o", "json").stdout))


def _boots(env: dict[str, str], name: str) -> list[int]:
    text = run(env, "vm", "console", name).stdout
    return [int(n) for n in re.findall(r"OTHERIX-GUEST-UP boot=(\d+)", text)]


def _wait_boot(env: dict[str, str], name: str, n: int) -> None:
    wait_until(lambda: n in _boots(env, name) or None, timeout=90, what=f"boot={n} on {name}")


def test_a_vm_boots_from_its_pool_disk_and_keeps_it_across_stop_start_restart(
    tmp_path: Path, test_guest: Path
) -> None:
    cp = ControlPlane(tmp_path / "api", overrides=FAST).start()
    try:
        with (
            ImageOrigin(test_guest.read_bytes()) as origin,
            Cluster(cp, tmp_path, agent_config=AGENT) as cluster,
        ):
            node = cluster.add_node("node-a", runs_vms=True)
            cluster.wait_pool_status("node-a", "default", "ready", timeout=20)
            env = cli_env(cp.url, cp.admin_token, tmp_path)
            url = origin.serve("guest.qcow2", test_guest.read_bytes())

            created = run(
                env, "vm", "create", "g1", "--image-url", url, "--vcpus", "1",
                "--memory-mb", "256", "--wait",
            )  # fmt: skip
            assert "state: running" in created.stdout, created.stdout
            vm = _vm(env, "g1")
            assert vm["status"]["phase"] == "stopped"  # the disk's lifecycle: ready
            assert vm["status"]["state"] == "running"
            assert vm["power_state"] == "running"
            assert vm["restart_policy"] == "on-failure"
            runtime = vm["status"]["runtime"]
            assert runtime["accelerator"] == "tcg"
            pid = runtime["pid"]
            assert node.qemu_pids() == {vm["id"]: pid}
            disk = node.host_path(vm["disks"][0]["file_path"])
            assert disk.is_file()
            cached = node.host_path("/var/lib/otherix/pools/default/images/guest.qcow2")
            assert cached.read_bytes() == test_guest.read_bytes()  # through the pool cache
            assert len(origin.gets("/guest.qcow2")) == 1

            _wait_boot(env, "g1", 1)
            text = run(env, "vm", "get", "g1").stdout
            assert re.search(rf"state: running \(pid {pid}, tcg, up \d+", text), text
            listed = run(env, "vm", "list").stdout.splitlines()
            assert listed[0].split()[:5] == ["NAME", "POOL", "NODE", "PHASE", "STATE"]
            assert listed[1].split()[:5] == ["g1", "default", "node-a", "stopped", "running"]

            # Storage kept safe: the pool cannot go, nor the running VM without --force.
            pool = cluster.admin.delete("/v1/storage-pools/default")
            assert pool.status_code == 409, pool.text
            r = cluster.admin.delete("/v1/vms/g1")
            assert r.status_code == 409, r.text
            assert r.json()["error"]["code"] == "vm_running"

            stopped = run(env, "vm", "stop", "g1", "--wait")
            assert stopped.stdout.strip() == "vm g1 stopped", stopped.stdout
            assert node.qemu_pids() == {}
            assert guest.read_counter(disk) == 1
            assert _vm(env, "g1")["power_state"] == "stopped"

            run(env, "vm", "start", "g1", "--wait")
            _wait_boot(env, "g1", 2)
            run(env, "vm", "restart", "g1", "--wait")
            _wait_boot(env, "g1", 3)
            run(env, "vm", "stop", "g1", "--wait")
            assert guest.read_counter(disk) == 3  # three boots, all from the pool's disk

            run(env, "vm", "start", "g1", "--wait")
            deleted = run(env, "vm", "delete", "g1", "--force", "--wait")
            assert deleted.stdout.strip() == "vm g1 deleted"
            assert node.qemu_pids() == {}
            assert not disk.exists()
    finally:
        cp.stop()

"""A VM moved between pools boots from its new disk (issue 16, deliverable 5's "done when"),
on a real cluster from the harness, with the real CLI as processes.

The test guest (``support.guest``: it counts its boots on its data partition and prints
``OTHERIX-GUEST-UP boot=N``) becomes a stopped VM on the node's ``default`` pool
(``--no-start``); ``otherix vm move --pool fast --wait`` copies its disk to the pool
``fast`` (sha256 printed and equal to the source's); the old copy goes; ``otherix vm
start --wait`` boots QEMU (TCG) from the moved file (its command line names it, and the
boot counter read off that file after a stop is 1). A move of the running VM is refused
with ``vm_running``, a move to a cordoned pool with ``pool_cordoned``: exit 1, one
sentence, the code under ``--debug``, nothing moved. Then across nodes: a pool only on
node-b is refused without ``--node``; with it, node-b's agent pulls the disk from node-a's
transfer endpoint, the VM is node-b's, node-a's copy goes, and it boots there (boot=2).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from support import guest
from support.cli import cli_env, run
from support.harness import FAST, Cluster, ControlPlane, wait_until
from support.images import ImageOrigin

pytestmark = [pytest.mark.slow]  # a TCG boot of a real kernel

AGENT = {"images": {"allow_loopback_and_link_local": True}}
POOLS = "/var/lib/otherix/pools"


def _vm(env: dict[str, str], name: str) -> dict[str, Any]:
    return dict(json.loads(run(env, "vm", "get", name, "-o", "json").stdout))


def _sha(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _refused(env: dict[str, str], *args: str) -> tuple[str, str]:
    """``otherix ARGS`` failing as the CLI reports an API error: exit 1, one sentence;
    (the sentence, the ``--debug`` detail line)."""
    plain = run(env, *args, ok=False)
    lines = plain.stderr.strip().splitlines()
    assert len(lines) == 1, plain.stderr
    assert lines[0].startswith("Error: "), plain.stderr
    debug = run(env, "--debug", *args, ok=False).stderr
    detail = next((ln for ln in debug.splitlines() if ln.startswith("debug: HTTP")), "")
    return lines[0], detail


def test_a_moved_vm_boots_from_its_new_pool(tmp_path: Path, test_guest: Path) -> None:
    cp = ControlPlane(tmp_path / "api", overrides=FAST).start()
    try:
        with ImageOrigin() as origin, Cluster(cp, tmp_path, agent_config=AGENT) as cluster:
            node = cluster.add_node("node-a", runs_vms=True)
            cluster.wait_pool_status("node-a", "default", "ready", timeout=20)
            env = cli_env(cp.url, cp.admin_token, tmp_path)
            for name in ("fast", "closed"):
                run(env, "pool", "create", name, "--node", "node-a", "--path", f"{POOLS}/{name}")
                cluster.wait_pool_status("node-a", name, "ready", timeout=20)
            url = origin.serve("/guest.qcow2", test_guest.read_bytes())
            run(env, "vm", "create", "g1", "--image-url", url, "--vcpus", "1",
                "--memory-mb", "256", "--no-start", "--wait")  # fmt: skip
            vm = _vm(env, "g1")
            assert (vm["pool"], vm["status"]["phase"], vm["status"]["state"]) == (
                "default",
                "stopped",
                "stopped",
            ), vm["status"]
            old = node.host_path(vm["disks"][0]["file_path"])
            before = _sha(old)

            # A cordoned pool takes no disk: refused, nothing copied.
            run(env, "pool", "cordon", "closed", "--node", "node-a")
            sentence, detail = _refused(env, "vm", "move", "g1", "--pool", "closed")
            assert "cordoned" in sentence, sentence
            assert "HTTP 409 pool_cordoned" in detail, detail
            assert not node.host_path(f"{POOLS}/closed/vms/{vm['id']}").exists()
            assert _vm(env, "g1")["pool"] == "default"

            # The move: the CLI's line names the method, the size and the verified sha256.
            moved = run(env, "vm", "move", "g1", "--pool", "fast", "--wait")
            line = moved.stdout.strip().splitlines()[-1]
            found = re.fullmatch(
                r"vm g1 moved to pool fast: disk (copied|reflinked) \((.+)\), "
                r"sha256 ([0-9a-f]{12}) verified",
                line,
            )
            assert found, moved.stdout
            assert found.group(3) == before[:12]
            vm = _vm(env, "g1")
            assert (vm["pool"], vm["status"]["phase"]) == ("fast", "stopped")
            new_path = vm["disks"][0]["file_path"]
            assert new_path == f"{POOLS}/fast/vms/{vm['id']}/disk.qcow2"
            new = node.host_path(new_path)
            assert _sha(new) == before
            wait_until(lambda: not old.exists() or None, timeout=20, what="the old copy removed")

            # It boots from the moved disk.
            run(env, "vm", "start", "g1", "--wait")
            wait_until(
                lambda: "OTHERIX-GUEST-UP boot=1" in run(env, "vm", "console", "g1").stdout or None,
                timeout=120,
                what="g1 booted",
            )
            [(vm_id, pid)] = node.qemu_pids().items()
            assert vm_id == vm["id"]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            assert new_path in cmdline, cmdline

            # A running VM's disk does not move.
            sentence, detail = _refused(env, "vm", "move", "g1", "--pool", "default")
            assert "stop it first" in sentence, sentence
            assert "HTTP 409 vm_running" in detail, detail
            assert _vm(env, "g1")["pool"] == "fast"
            assert not old.exists()

            run(env, "vm", "stop", "g1", "--wait")
            assert guest.read_counter(new) == 1  # the boot wrote to the moved file

            # Across nodes: node-b's agent pulls the disk from node-a's, and it boots there.
            far = cluster.add_node("node-b", runs_vms=True)
            cluster.wait_pool_status("node-b", "default", "ready", timeout=20)
            run(env, "pool", "create", "far", "--node", "node-b", "--path", f"{POOLS}/far")
            cluster.wait_pool_status("node-b", "far", "ready", timeout=20)
            sentence, detail = _refused(env, "vm", "move", "g1", "--pool", "far")
            assert "--node node-b" in sentence, sentence  # never across nodes by accident
            assert "HTTP 400 validation_failed" in detail, detail
            booted_once = _sha(new)
            moved = run(env, "vm", "move", "g1", "--pool", "far", "--node", "node-b", "--wait")
            assert booted_once[:12] in moved.stdout, moved.stdout
            vm = _vm(env, "g1")
            assert (vm["node"], vm["pool"], vm["status"]["phase"]) == ("node-b", "far", "stopped")
            there = far.host_path(vm["disks"][0]["file_path"])
            assert _sha(there) == booted_once
            wait_until(lambda: not new.exists() or None, timeout=20, what="node-a's copy removed")
            run(env, "vm", "start", "g1", "--wait")
            wait_until(
                lambda: "OTHERIX-GUEST-UP boot=2" in run(env, "vm", "console", "g1").stdout or None,
                timeout=120,
                what="g1 booted on node-b",
            )
            assert list(far.qemu_pids()) == [vm["id"]]
            assert node.qemu_pids() == {}
            run(env, "vm", "stop", "g1", "--wait")
            assert guest.read_counter(there) == 2
    finally:
        cp.stop()

"""Several nodes on one machine, each in its own mount (and network) namespace.

Needs root (namespaces, bind mounts, veth pairs); skipped otherwise.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from otherix.agent.fs import WRITE_PROBE_NAME
from support.harness import FAST, Cluster, ControlPlane

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces"),
]

DEFAULT = "/var/lib/otherix/pools/default"
MARKER = ".otherix-pool.json"  # the pool identity marker (docs/architecture.md)


def host_mounts() -> list[str]:
    with open("/proc/self/mounts") as fh:
        return [line.split()[1] for line in fh]


def test_each_node_sees_its_own_var_lib_otherix(tmp_path) -> None:
    mounts_before = host_mounts()
    cp = ControlPlane(tmp_path / "api", overrides=FAST).start()
    try:
        with Cluster(cp, tmp_path) as cluster:
            a = cluster.add_node("mnt-a")
            b = cluster.add_node("mnt-b")
            assert a.mount_ns
            assert b.mount_ns
            for name in ("mnt-a", "mnt-b"):
                pool = cluster.wait_pool_status(name, "default", "ready", timeout=8)
                assert pool["path"] == DEFAULT  # the same path on both nodes...
            dir_a, dir_b = a.host_path(DEFAULT), b.host_path(DEFAULT)
            assert dir_a != dir_b  # ...backed by different directories on this host
            for d in (dir_a, dir_b):
                # the write probe exists for a moment in every reconcile pass
                names = sorted(p.name for p in d.iterdir() if p.name != WRITE_PROBE_NAME)
                assert names == [MARKER, "images", "scratch", "vms"]
            (dir_a / "images" / "only-on-a").write_text("x")
            assert not (dir_b / "images" / "only-on-a").exists()
            assert host_mounts() == mounts_before  # the bind mounts stayed in the namespaces
    finally:
        cp.stop()


def test_partitioned_node_goes_unreachable_and_heals(tmp_path) -> None:
    cp = ControlPlane(tmp_path / "api", host="0.0.0.0", overrides=FAST).start()
    try:
        with Cluster(cp, tmp_path) as cluster:
            node = cluster.add_node("net-a", net_ns=True)
            assert node.netns is not None
            assert node.state()["server"].startswith(f"http://{node.netns.host_ip}:")
            cluster.wait_node_status("net-a", "ready", timeout=8)
            cluster.wait_pool_status("net-a", "default", "ready", timeout=8)

            node.partition()
            cluster.wait_node_status("net-a", "unreachable", timeout=8)
            assert node.alive

            node.heal()
            cluster.wait_node_status("net-a", "ready", timeout=15)
            pools = cluster.pools("net-a")
            assert [(p["name"], p["reconciliation_status"]) for p in pools] == [
                ("default", "ready")
            ]
            assert node.host_path(DEFAULT + "/vms").is_dir()
            assert (
                node.netns.name
                in subprocess.run(
                    ["ip", "netns", "list"], capture_output=True, text=True, check=True
                ).stdout
            )
        assert (
            node.netns.name
            not in subprocess.run(
                ["ip", "netns", "list"], capture_output=True, text=True, check=True
            ).stdout
        )  # cleaned up
    finally:
        cp.stop()

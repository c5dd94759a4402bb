"""The brief's image-cache and delete-blocking paragraphs, on a two-node
cluster, as a user runs them with the real CLI:

- a VM created without ``--pool`` lands in the cluster default pool;
- on first use the agent materialises the image under
  ``{poolPath}/images/{basename}`` with a ``.sha256`` sidecar (IfNotPresent);
  a second VM from the same image hits the cache instead of re-downloading;
- ``otherix pool get <uuid>`` lists the cached image;
- deletion is refused while the pool backs VM disks, listing the count and
  the VM names; the image cache is not a blocker.
"""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from otherix.cli.output import human_bytes
from support.cli import cli_env, run
from support.harness import FAST, Cluster, ControlPlane
from support.images import IMAGE, ImageOrigin

pytestmark = [pytest.mark.slow]

DEFAULT = "/var/lib/otherix/pools/default"


def test_image_cache_and_delete_blocking_as_the_brief_says(tmp_path):
    image = tmp_path / IMAGE
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    agent_config = {"images": {"allow_loopback_and_link_local": True}}
    cp = ControlPlane(tmp_path / "api", overrides=FAST).start()
    try:
        with (
            ImageOrigin(image) as server,
            Cluster(cp, tmp_path, agent_config=agent_config) as cluster,
        ):
            node_a = cluster.add_node("node-a")
            node_b = cluster.add_node("node-b")
            for name in ("node-a", "node-b"):
                cluster.wait_pool_status(name, "default", "ready", timeout=15)
            env = cli_env(cp.url, cp.admin_token, tmp_path)
            # No --pool: the cluster default pool; pinned to node-a.
            created = run(
                env,
                "vm",
                "create",
                "web-1",
                "--image-url",
                server.url,
                "--node",
                "node-a",
                "--disk-gib",
                "1",
                "--no-start",  # the image is not bootable: the brief's part is the disk
                "--wait",
            )
            assert "stopped" in created.stdout
            vm = json.loads(run(env, "vm", "get", "web-1", "-o", "json").stdout)
            assert vm["pool"] == "default"
            assert vm["node"] == "node-a"
            assert vm["status"]["phase"] == "stopped"
            disk_path = vm["disks"][0]["file_path"]
            assert disk_path == f"{DEFAULT}/vms/{vm['id']}/disk.qcow2"
            assert node_a.host_path(disk_path).is_file()
            # The cache, exactly where the brief says, with its sidecar.
            cached = node_a.host_path(f"{DEFAULT}/images/{IMAGE}")
            assert cached.read_bytes() == image.read_bytes()
            assert node_a.host_path(f"{DEFAULT}/images/{IMAGE}.sha256").read_text() == sha
            assert not node_b.host_path(f"{DEFAULT}/images/{IMAGE}").exists()
            assert server.hits.total() == 1

            # Same image again on the same node and pool: served from the cache.
            run(
                env,
                "vm",
                "create",
                "web-2",
                "--image-url",
                server.url,
                "--node",
                "node-a",
                "--disk-gib",
                "1",
                "--no-start",  # the image is not bootable: the brief's part is the disk
                "--wait",
            )
            assert server.hits.total() == 1

            # The cache surfaces on the pool view.
            instance = next(
                p
                for p in json.loads(run(env, "pool", "list", "-o", "json").stdout)["data"]
                if p["node"] == "node-a"
            )
            text = run(env, "pool", "get", instance["id"]).stdout
            assert "images:" in text
            size = human_bytes(image.stat().st_size)
            assert f"  - {IMAGE} (sha {sha[:12]}, {size})" in text

            # Deletion is refused while the pool backs VM disks: count and names.
            blocked = run(env, "pool", "delete", instance["id"], "--force", ok=False)
            assert "vm_disks: 2" in blocked.stdout
            assert "VMs with a disk on this pool:\n  - web-1\n  - web-2" in blocked.stdout
            # Remove the dependents, then the delete goes through; the cache never blocks it.
            for vm_name in ("web-1", "web-2"):
                run(env, "vm", "delete", vm_name, "--force", "--wait")
            assert not node_a.host_path(f"{DEFAULT}/vms/{vm['id']}").exists()
            assert cached.exists()  # the image cache stays
            assert "deleted" in run(env, "pool", "delete", instance["id"], "--force").stdout
    finally:
        cp.stop()

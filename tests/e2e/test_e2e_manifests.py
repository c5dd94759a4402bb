"""Issue 6's walk on a three-node cluster, as a user: ``apply -f`` a manifest
with a ``nodeList`` pool and two VMs, re-apply it as a no-op, round-trip
``get -o yaml`` into ``apply -f``, and ``delete -f`` everything, checking the
CLI output at each step and the files on each node."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from support.cli import cli_env, run
from support.harness import FAST, Cluster, ControlPlane
from support.images import IMAGE, ImageOrigin

pytestmark = [pytest.mark.slow]

FAST_PATH = "/var/lib/otherix/pools/fast"


def test_apply_reapply_roundtrip_delete_on_three_nodes(tmp_path):
    image = tmp_path / IMAGE
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "32M"], check=True)
    cp = ControlPlane(tmp_path / "api", overrides=FAST).start()
    try:
        agent_config = {"images": {"allow_loopback_and_link_local": True}}
        with (
            ImageOrigin(image) as server,
            Cluster(cp, tmp_path, agent_config=agent_config) as cluster,
        ):
            nodes = {n: cluster.add_node(n) for n in ("node-1", "node-2", "node-3")}
            for n in nodes:
                cluster.wait_pool_status(n, "default", "ready", timeout=20)
            env = cli_env(cp.url, cp.admin_token, tmp_path)
            manifest = tmp_path / "stack.yaml"
            manifest.write_text(
                yaml.safe_dump_all(
                    [
                        {
                            "apiVersion": "otherix/v1",
                            "kind": "StoragePool",
                            "metadata": {"name": "fast"},
                            "spec": {
                                "type": "local_dir",
                                "path": FAST_PATH,
                                "nodeList": ["node-1", "node-2", "node-3"],
                            },
                        },
                        *(
                            {
                                "apiVersion": "otherix/v1",
                                "kind": "VM",
                                "metadata": {"name": vm},
                                "spec": {
                                    "imageURL": server.url,
                                    "pool": "fast",
                                    "node": node,
                                    "diskGiB": 1,
                                },
                            }
                            for vm, node in (("web-1", "node-1"), ("web-2", "node-2"))
                        ),
                    ]
                )
            )
            # Preview, then apply.
            plan = run(env, "apply", "-f", str(manifest), "--dry-run").stdout
            for n in nodes:
                assert f"create StoragePool/fast on {n}" in plan
            assert "create VM/web-1" in plan
            applied = run(env, "apply", "-f", str(manifest), "--wait").stdout
            for n in nodes:
                assert f"StoragePool/fast on {n}" in applied
            for n, agent in nodes.items():
                assert agent.host_path(f"{FAST_PATH}/images").is_dir(), n
            vms = {
                v["name"]: v
                for v in json.loads(run(env, "vm", "list", "-o", "json").stdout)["data"]
            }
            assert {name: v["status"]["phase"] for name, v in vms.items()} == {
                "web-1": "stopped",
                "web-2": "stopped",
            }
            assert (
                nodes["node-1"]
                .host_path(f"{FAST_PATH}/vms/{vms['web-1']['id']}/disk.qcow2")
                .is_file()
            )

            # Re-apply: a no-op.
            again = run(env, "apply", "-f", str(manifest))
            lines = [line for line in again.stdout.splitlines() if line.strip()]
            assert lines
            assert all(line.startswith("unchanged ") for line in lines), again.stdout

            # Round trip: what get -o yaml prints is apply-ready and changes nothing.
            exported = tmp_path / "exported.yaml"
            exported.write_text(
                run(env, "pool", "get", "fast", "-o", "yaml").stdout
                + "---\n"
                + run(env, "vm", "get", "web-1", "-o", "yaml").stdout
            )
            pool_doc = next(yaml.safe_load_all(exported.read_text()))
            assert pool_doc["spec"]["nodeList"] == ["node-1", "node-2", "node-3"]
            rt = run(env, "apply", "-f", str(exported))
            assert all(
                line.startswith("unchanged ") for line in rt.stdout.splitlines() if line.strip()
            )

            # Tear down in reverse order: VMs first, so the pool deletes are not blocked.
            gone = run(env, "delete", "-f", str(manifest), "--force", "--wait").stdout
            assert gone.index("VM/web-1") < gone.index("StoragePool/fast")
            assert json.loads(run(env, "vm", "list", "-o", "json").stdout)["data"] == []
            left = json.loads(run(env, "pool", "list", "-o", "json").stdout)["data"]
            assert sorted(p["name"] for p in left) == ["default", "default", "default"]
            # Files stay on the nodes; the disks are gone.
            assert not nodes["node-1"].host_path(f"{FAST_PATH}/vms/{vms['web-1']['id']}").exists()
            assert nodes["node-1"].host_path(f"{FAST_PATH}/images/{IMAGE}").is_file()
    finally:
        cp.stop()

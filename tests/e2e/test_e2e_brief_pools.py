"""The product brief (../shared/brief/storage-pools-guide.txt), walked as a user
on a two-node cluster: every command the brief shows is run through the real
``otherix`` CLI and its printed output is checked; on disk, in each node's own
mount namespace, the directories exist where the brief says.

Needs root (each agent runs in its own mount namespace with its own
``/var/lib/otherix``); without root the harness falls back to distinct host
roots per node and the on-disk checks follow ``host_path``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from support import rows as store_rows
from support.harness import FAST, Cluster, ControlPlane

pytestmark = [pytest.mark.slow]

OTHERIX = str(Path(sys.executable).with_name("otherix"))
DEFAULT = "/var/lib/otherix/pools/default"


class Cli:
    def __init__(self, url: str, token: str, tmp: Path) -> None:
        self.env = {
            **os.environ,
            "OTHERIX_SERVER": url,
            "OTHERIX_API_TOKEN": token,
            "OTHERIX_CONFIG": str(tmp / "cli-config"),
        }

    def __call__(
        self, *args: str, ok: bool = True, code: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [OTHERIX, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        if code is not None:
            assert r.returncode == code, f"otherix {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
        elif ok:
            assert r.returncode == 0, f"otherix {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
        else:
            assert r.returncode == 1, (
                f"otherix {' '.join(args)} should fail:\n{r.stdout}\n{r.stderr}"
            )
        return r


def rows(table: str) -> list[list[str]]:
    return [line.split() for line in table.strip().splitlines()]


@pytest.fixture
def two_nodes(tmp_path):
    cp = ControlPlane(tmp_path / "api", overrides=FAST).start()
    try:
        with Cluster(cp, tmp_path) as cluster:
            a = cluster.add_node("node-a")
            b = cluster.add_node("node-b")
            for name in ("node-a", "node-b"):
                cluster.wait_node_status(name, "ready", timeout=15)
                cluster.wait_pool_status(name, "default", "ready", timeout=15)
            yield cluster, a, b, Cli(cp.url, cp.admin_token, tmp_path), cp
    finally:
        cp.stop()


def test_the_brief_on_two_nodes(two_nodes):  # one walk, in the brief's order
    cluster, node_a, node_b, otherix, cp = two_nodes

    # Listing pools: one row per per-node instance, the brief's columns.
    listed = rows(otherix("pool", "list").stdout)
    assert listed[0] == ["NAME", "NODE", "TYPE", "PATH", "AVAILABLE", "STATUS", "DEFAULT", "AGE"]
    assert [r[:4] for r in listed[1:]] == [
        ["default", "node-a", "local_dir", DEFAULT],
        ["default", "node-b", "local_dir", DEFAULT],
    ]
    for r in listed[1:]:
        assert r[4].endswith("iB")  # AVAILABLE, human size from the agent's report
        assert r[5:7] == ["ready", "yes"]
    # On disk, in each node's own /var/lib/otherix.
    for node in (node_a, node_b):
        for sub in ("images", "scratch", "vms"):
            assert node.host_path(f"{DEFAULT}/{sub}").is_dir()
    assert node_a.host_path(DEFAULT) != node_b.host_path(DEFAULT)

    # Filters, ids and machine output.
    only_a = rows(otherix("pool", "list", "--node", "node-a").stdout)
    assert [r[1] for r in only_a[1:]] == ["node-a"]
    assert len(rows(otherix("pool", "list", "--type", "local_dir").stdout)) == 3
    with_ids = rows(otherix("pool", "list", "--show-ids").stdout)
    assert with_ids[0][0] == "ID"
    uuid.UUID(with_ids[1][0])
    as_json = json.loads(otherix("pool", "list", "-o", "json").stdout)
    assert {p["node"] for p in as_json["data"]} == {"node-a", "node-b"}
    docs = list(yaml.safe_load_all(otherix("pool", "list", "-o", "yaml").stdout))
    assert [d["spec"]["node"] for d in docs] == ["node-a", "node-b"]

    # Inspecting one pool: by name (aggregated) and by UUID (flat, with runtime detail).
    by_name = otherix("pool", "get", "default").stdout
    assert "name: default" in by_name
    assert "is_cluster_default: true" in by_name
    assert "  - node: node-a" in by_name
    assert "  - node: node-b" in by_name
    manifest = yaml.safe_load(otherix("pool", "get", "default", "-o", "yaml").stdout)
    assert manifest["kind"] == "StoragePool"
    assert manifest["spec"] == {
        "type": "local_dir",
        "path": DEFAULT,
        "nodeList": ["node-a", "node-b"],
    }
    instance_id = as_json["data"][0]["id"]
    flat = otherix("pool", "get", instance_id).stdout
    assert f"id: {instance_id}" in flat
    assert "reconciliation_status: ready" in flat
    assert "disk: none" in flat  # null disk_pressure, as the JSON says
    flat_json = json.loads(otherix("pool", "get", instance_id, "-o", "json").stdout)
    assert flat_json["capacity_bytes"] > 0
    assert flat_json["available_bytes"] > 0
    assert flat_json["images"] == []

    # Creating a pool: one (name, node) per call, --wait until ready.
    created = otherix(
        "pool",
        "create",
        "fast",
        "--node",
        "node-a",
        "--path",
        "/var/lib/otherix/pools/fast",
        "--wait",
    )
    assert "pool fast created on node node-a" in created.stdout
    assert "reconciliation_status: ready" in created.stdout
    assert node_a.host_path("/var/lib/otherix/pools/fast/vms").is_dir()
    assert not node_b.host_path("/var/lib/otherix/pools/fast").exists()
    # Not idempotent: the same (name, node) twice is an error.
    again = otherix(
        "pool",
        "create",
        "fast",
        "--node",
        "node-a",
        "--path",
        "/var/lib/otherix/pools/fast",
        ok=False,
    )
    assert again.stderr.startswith("Error: ")
    assert "already exists" in again.stderr
    # The allowed-path gate, boundary-safe; absolute only.
    evil = otherix(
        "pool",
        "create",
        "x",
        "--node",
        "node-a",
        "--path",
        "/var/lib/otherix/pools-evil/x",
        ok=False,
    )
    assert evil.stderr.startswith("Error: path is not on the storage_pools allowlist")
    relative = otherix(
        "pool", "create", "x", "--node", "node-a", "--path", "var/lib/otherix/pools/x", ok=False
    )
    assert "absolute" in relative.stderr
    too_long = otherix(
        "pool",
        "create",
        "x",
        "--node",
        "node-a",
        "--path",
        "/var/lib/otherix/pools/" + "a" * 1010,
        ok=False,
    )
    assert "1024" in too_long.stderr
    # --node takes a name; a UUID literal is rejected by the server.
    node_uuid = cluster.node("node-a")["id"]
    by_uuid = otherix(
        "pool", "create", "x", "--node", node_uuid, "--path", "/var/lib/otherix/pools/x", ok=False
    )
    assert "uuid" in by_uuid.stderr.lower()
    assert not node_a.host_path("/var/lib/otherix/pools/x").exists()

    # The cluster default pool.
    assert otherix("cluster", "get-default-pool").stdout.strip() == "default-pool: default"
    assert (
        otherix("cluster", "set-default-pool", "FAST").stdout.strip()
        == "default pool set to 'fast'"
    )
    missing = otherix("cluster", "set-default-pool", "nope", ok=False)
    assert missing.stderr == (
        "Error: pool \"nope\" not found; run 'otherix pool list' to see the pools\n"
    )
    refused = otherix("cluster", "unset-default-pool", code=2)
    assert "pass --force to clear the cluster default pool" in refused.stderr
    assert (
        otherix("cluster", "unset-default-pool", "--force").stdout.strip() == "default pool cleared"
    )
    assert "no default pool configured" in otherix("cluster", "get-default-pool").stdout
    otherix("cluster", "set-default-pool", "default")

    # Deleting a pool: an ambiguous name lists the instances and both ways to retry.
    ambiguous = otherix("pool", "delete", "default", "--force", ok=False)
    text = ambiguous.stdout + ambiguous.stderr
    assert 'pool "default" maps to multiple per-node instances' in text
    assert "retry by node:\n  otherix pool delete default --node <node>" in text
    assert "or by instance UUID:\n  otherix pool delete <uuid>" in text
    for p in as_json["data"]:
        assert f"node {p['node']:<14}  {p['id']}" in text

    # Deletion is refused while the pool backs VM disks (a disk row, as a VM would leave).
    fast_id = json.loads(otherix("pool", "get", "fast", "-o", "json").stdout)["instances"][0]["id"]
    vm_id = store_rows.add_vm_disk(cp.server.deps.db, fast_id, "web-1")
    blocked = otherix("pool", "delete", "fast", "--force", ok=False)
    assert "cannot delete pool fast" in blocked.stdout
    assert "vm_disks: 1" in blocked.stdout
    assert "VMs with a disk on this pool:\n  - web-1" in blocked.stdout
    assert "blocked" in blocked.stderr
    store_rows.remove_vm_disks(cp.server.deps.db, vm_id)
    assert "pool fast deleted" in otherix("pool", "delete", "fast", "--force").stdout

    # By --node, and by UUID; the files stay on the node's disk.
    assert (
        "pool default on node node-b deleted"
        in otherix("pool", "delete", "default", "--node", "node-b", "--force").stdout
    )
    remaining = json.loads(otherix("pool", "list", "-o", "json").stdout)["data"]
    assert [(p["name"], p["node"]) for p in remaining] == [("default", "node-a")]
    # the last instance of the cluster default is kept until the default moves (issue 13)
    last = otherix("pool", "delete", remaining[0]["id"], "--force", ok=False)
    assert "is the cluster default and this is its last instance" in last.stderr
    assert "otherix cluster unset-default-pool" in last.stderr
    otherix("cluster", "unset-default-pool", "--force")
    otherix("pool", "delete", remaining[0]["id"], "--force")
    assert json.loads(otherix("pool", "list", "-o", "json").stdout)["data"] == []
    assert node_b.host_path(f"{DEFAULT}/images").is_dir()
    assert node_a.host_path("/var/lib/otherix/pools/fast/images").is_dir()

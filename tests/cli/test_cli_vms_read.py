"""``otherix vm list`` and ``otherix vm get``, and the VM names in a blocked ``pool delete``."""

from __future__ import annotations

import json
import re

import yaml
from clihelpers import failed, ok, table, usage
from test_cli_vms_helpers import (
    IMAGE,
    agent_report,
    created,
    desired_tasks,
    make_vm,
    ready_node,
    ready_pool,
    vm_of,
)


def two_vms(api):
    """web-1 placed on pool fast (node-a) with its disk ready; web-2 unplaceable."""
    node = ready_node(api, "node-a")
    pool = ready_pool(api, node, "fast")
    make_vm(api, "web-1", pool="fast", disk_gib=10, image_sha256="ab" * 32)
    [task] = desired_tasks(api, node)
    agent_report(api, node, task["id"], **created(task))
    make_vm(api, "web-2", pool="ghost", node="node-b")
    return node, pool


def test_list_table_and_filters(cli, api):
    two_vms(api)
    rows = table(ok(cli("vm", "list")))
    assert [{k: v for k, v in r.items() if k != "AGE"} for r in rows] == [
        {
            "NAME": "web-1",
            "POOL": "fast",
            "NODE": "node-a",
            "PHASE": "stopped",
            "STATE": "running",
            "REASON": "",
        },
        {
            "NAME": "web-2",
            "POOL": "ghost",
            "NODE": "-",
            "PHASE": "pending",
            "STATE": "-",
            "REASON": "pool_not_found",
        },
    ]
    assert all(r["AGE"].endswith("s") for r in rows)
    assert [r["NAME"] for r in table(ok(cli("vm", "list", "--pool", "fast")))] == ["web-1"]
    assert [r["NAME"] for r in table(ok(cli("vm", "list", "--status", "pending")))] == ["web-2"]
    assert [r["NAME"] for r in table(ok(cli("vm", "list", "--node", "node-a")))] == ["web-1"]
    assert ok(cli("vm", "list", "--pool", "nothing-here")) == (
        "NAME  POOL  NODE  PHASE  STATE  REASON  AGE\n"
    )


def test_list_ids_paging_json_and_yaml(cli, api):
    two_vms(api)
    web1, web2 = vm_of(api, "web-1"), vm_of(api, "web-2")
    rows = table(ok(cli("vm", "list", "--show-ids")))
    assert [r["ID"] for r in rows] == [web1["id"], web2["id"]]

    out = ok(cli("vm", "list", "--limit", "1"))
    assert [r["NAME"] for r in table(out.split("\n\n")[0])] == ["web-1"]
    body = json.loads(ok(cli("vm", "list", "--limit", "1", "-o", "json")))
    cursor = body["meta"]["next_cursor"]
    assert out.endswith(f" vm list --limit 1 --cursor {cursor}\n")
    assert "\nMore results - next page:\n  otherix " in out
    assert [vm["name"] for vm in body["data"]] == ["web-1"]
    page2 = table(ok(cli("vm", "list", "--limit", "1", "--cursor", cursor)))
    assert [r["NAME"] for r in page2] == ["web-2"]

    result = cli("vm", "list", "-o", "yaml")
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(ok(result))] == ["web-1", "web-2"]
    assert usage(cli("vm", "list", "-o", "text")) == (
        'Error: --output: unknown format "text" (table, json, yaml)\n'
    )


def test_get_text_shows_disks_with_pool_and_size(cli, api):
    _, pool = two_vms(api)
    vm = vm_of(api, "web-1")
    out = ok(cli("vm", "get", "web-1"))
    # the uptime moves: the rest of the state line is fixed (the agent reported pid 4242)
    out = re.sub(r"up [0-9dhms]+\)", "up UPTIME)", out)
    assert out == (
        "name: web-1\n"
        f"id: {vm['id']}\n"
        "owner: admin\n"
        f"image_url: {IMAGE}\n"
        f"image_sha256: {'ab' * 32}\n"
        "pull_policy: if-not-present\n"
        "arch: amd64\n"
        "vcpus: 2\n"
        "memory_mb: 2048\n"
        "format: qcow2\n"
        "disk_gib: 10\n"
        "pool: fast\n"
        "node: node-a\n"
        "phase: stopped (disk ready)\n"
        "state: running (pid 4242, tcg, up UPTIME)\n"
        "power_state: running (desired)\n"
        "restart_policy: on-failure\n"
        f"task: {vm['status']['task_id']}\n"
        "disks:\n"
        "  - pool fast, 10GiB, qcow2\n"
        "    virtual_size: 10.0GiB\n"
        "    allocated: 3.0GiB\n"
        f"    path: {pool['path']}/vms/{vm['id']}/disk.qcow2\n"
        f"created_at: {vm['created_at']}\n"
        f"updated_at: {vm['updated_at']}\n"
    )
    out = ok(cli("vm", "get", "web-2", role="viewer"))
    assert "node: - (requested node-b)\n" in out
    assert 'phase: pending (pool_not_found: pool "ghost" not found in cluster)\n' in out
    assert "disks: <none>\n" in out
    assert "disk_gib: 0 (the image's virtual size)\n" in out
    as_json = json.loads(ok(cli("vm", "get", "web-1", "-o", "json")))
    for body in (as_json, vm):  # the uptime moves on between the two reads
        body["status"]["runtime"].pop("uptime_seconds")
    assert as_json == vm
    assert failed(cli("vm", "get", "nope")) == (
        "Error: VM \"nope\" not found; run 'otherix vm list' to see the VMs\n"
    )


def test_get_yaml_is_an_apply_ready_manifest(cli, api):
    two_vms(api)
    assert ok(cli("vm", "get", "web-1", "-o", "yaml")) == (
        "apiVersion: otherix/v1\n"
        "kind: VM\n"
        "metadata:\n"
        "  name: web-1\n"
        "spec:\n"
        f"  imageURL: {IMAGE}\n"
        f"  imageSHA256: {'ab' * 32}\n"
        "  imagePullPolicy: if-not-present\n"
        "  arch: amd64\n"
        "  vcpus: 2\n"
        "  memoryMB: 2048\n"
        "  format: qcow2\n"
        "  diskGiB: 10\n"
        "  pool: fast\n"
    )
    # the node is the one asked for (never where it landed); empty fields are left out
    spec = yaml.safe_load(ok(cli("vm", "get", "web-2", "-o", "yaml")))["spec"]
    assert spec == {
        "imageURL": IMAGE,
        "imagePullPolicy": "if-not-present",
        "arch": "amd64",
        "vcpus": 2,
        "memoryMB": 2048,
        "format": "qcow2",
        "pool": "ghost",
        "node": "node-b",
    }


def test_blocked_pool_delete_lists_the_vms_holding_a_disk(cli, api):
    _, pool = two_vms(api)
    make_vm(api, "web-3", pool="fast", node="node-z")  # asks for fast, holds no disk
    result = cli("pool", "delete", "--force", "fast")
    assert result.exit_code == 1
    assert result.stdout == (
        "cannot delete pool fast — blocked by:\n"
        "  - vm_disks: 1\n"
        "\n"
        "VMs with a disk on this pool:\n"
        "  - web-1\n"
        "\n"
        "clean up the listed dependents before retrying delete.\n"
    )
    assert result.stderr == "Error: pool fast blocked: conflict\n"
    result = cli("pool", "delete", "--force", pool["id"], "-o", "json")
    assert json.loads(result.stdout)["vms"] == ["web-1"]
    assert vm_of(api, "web-1") is not None

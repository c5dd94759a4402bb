"""``otherix pool list`` and ``otherix pool get`` against the real server (§5.3)."""

from __future__ import annotations

import json

import yaml
from clihelpers import create_pool, failed, get_json, heartbeat, join_node, ok, pool_report, table

FAST = "/var/lib/otherix/pools/fast"
SLOW = "/var/lib/otherix/pools/slow"


def two_nodes_with_fast(api):
    a = join_node(api, "node-a")
    b = join_node(api, "node-b")
    fa = create_pool(api, "fast", "node-a", FAST)
    fb = create_pool(api, "fast", "node-b", FAST)
    return a, b, fa, fb


def test_list_columns_status_available_and_default(cli, api):
    a, _, fa, fb = two_nodes_with_fast(api)
    slow = create_pool(api, "slow", "node-b", SLOW)
    with api.client("admin") as c:
        assert c.put("/v1/cluster/default-pool", json={"name": "fast"}).status_code == 200
    # node-a's agent reports "fast" ready with 80 of 100 bytes free. Being
    # promoted to ready also auto-provisions the "default" pool on node-a.
    heartbeat(api, a, [pool_report("fast", capacity=100, available=80)])

    out = ok(cli("pool", "list", role="viewer"))
    assert out.splitlines()[0].split() == [
        "NAME", "NODE", "TYPE", "PATH", "AVAILABLE", "STATUS", "DEFAULT", "AGE",
    ]  # fmt: skip
    rows = table(out)
    for row in rows:
        assert row.pop("AGE").endswith("s")
    default_path = f"{api.server.settings.data_dir}/pools/default"
    assert rows == [
        {"NAME": "fast", "NODE": "node-a", "TYPE": "local_dir", "PATH": FAST,
         "AVAILABLE": "80B", "STATUS": "ready", "DEFAULT": "yes"},
        {"NAME": "fast", "NODE": "node-b", "TYPE": "local_dir", "PATH": FAST,
         "AVAILABLE": "-", "STATUS": "pending", "DEFAULT": "yes"},
        {"NAME": "slow", "NODE": "node-b", "TYPE": "local_dir", "PATH": SLOW,
         "AVAILABLE": "-", "STATUS": "pending", "DEFAULT": ""},
        {"NAME": "default", "NODE": "node-a", "TYPE": "local_dir", "PATH": default_path,
         "AVAILABLE": "-", "STATUS": "pending", "DEFAULT": ""},
    ]  # fmt: skip

    ids = table(ok(cli("pool", "list", "--show-ids")))
    assert [r["ID"] for r in ids[:3]] == [fa["id"], fb["id"], slow["id"]]

    by_node = table(ok(cli("pool", "list", "--node", "node-b")))
    assert [(r["NAME"], r["NODE"]) for r in by_node] == [("fast", "node-b"), ("slow", "node-b")]
    assert len(table(ok(cli("pool", "list", "--type", "local_dir")))) == 4
    err = failed(cli("pool", "list", "--type", "zfs"))
    assert err.startswith("Error: ")
    err = failed(cli("pool", "list", "--node", "node-9"))
    assert err == "Error: node \"node-9\" not found; run 'otherix node list' to see the nodes\n"


def test_list_pages_with_a_footer_and_renders_json_and_yaml(cli, api):
    _, _, fa, fb = two_nodes_with_fast(api)
    out = ok(cli("pool", "list", "--limit", "1"))
    lines = out.splitlines()
    assert len(lines) == 5
    assert lines[2:4] == ["", "More results - next page:"]
    # The hint repeats the global flags given (never the token) and the list's own.
    assert lines[4].startswith(f"  otherix --endpoint {api.url} --config ")
    assert " pool list --limit 1 --cursor " in lines[4]
    assert "--token" not in lines[4]
    cursor = lines[4].split("--cursor ", 1)[1]
    second = ok(cli("pool", "list", "--limit", "1", "--cursor", cursor))
    assert table(second)[0]["NODE"] == "node-b"
    assert "More results" not in second

    body = json.loads(ok(cli("pool", "list", "-o", "json")))
    assert [p["id"] for p in body["data"]] == [fa["id"], fb["id"]]
    assert body["meta"] == {"next_cursor": None}

    docs = list(yaml.safe_load_all(ok(cli("pool", "list", "-o", "yaml"))))
    assert docs == [
        {"apiVersion": "otherix/v1", "kind": "StoragePool", "metadata": {"name": "fast"},
         "spec": {"type": "local_dir", "path": FAST, "node": node}}
        for node in ("node-a", "node-b")
    ]  # fmt: skip
    result = cli("pool", "list", "-o", "yaml", "--limit", "1")
    assert len(list(yaml.safe_load_all(ok(result)))) == 1
    assert " pool list --limit 1 --output yaml --cursor " in result.stderr


def test_get_by_name_is_the_aggregated_view(cli, api):
    _, _, fa, fb = two_nodes_with_fast(api)
    status, concept = get_json(api, "/v1/storage-pools/fast")
    assert status == 200
    first, second = concept["instances"]  # the server's order
    out = ok(cli("pool", "get", "fast", role="viewer"))
    assert out == (
        "name: fast\n"
        "type: local_dir\n"
        "is_cluster_default: false\n"
        "instances:\n"
        f"  - node: {first['node']}\n"
        f"    id: {first['id']}\n"
        f"    path: {FAST}\n"
        "    available: -\n"
        "    disk_pressure: -\n"
        "    reconciliation_status: pending\n"
        f"  - node: {second['node']}\n"
        f"    id: {second['id']}\n"
        f"    path: {FAST}\n"
        "    available: -\n"
        "    disk_pressure: -\n"
        "    reconciliation_status: pending\n"
    )
    body = json.loads(ok(cli("pool", "get", "fast", "-o", "json")))
    assert body == concept
    assert {i["id"] for i in body["instances"]} == {fa["id"], fb["id"]}


def test_get_by_uuid_is_the_flat_instance(cli, api):
    a = join_node(api, "node-a")
    pool = create_pool(api, "fast", "node-a", FAST)
    heartbeat(api, a, [pool_report("fast", capacity=100 * 2**30, available=40 * 2**30)])
    _, flat = get_json(api, f"/v1/storage-pools/{pool['id']}")
    out = ok(cli("pool", "get", pool["id"]))
    assert out == (
        f"id: {pool['id']}\n"
        "name: fast\n"
        "node: node-a\n"
        "type: local_dir\n"
        f"path: {FAST}\n"
        "available: 40.0GiB\n"
        "capacity_bytes: 100.0GiB\n"
        f"reported_at: {flat['reported_at']}\n"
        "is_cluster_default: false\n"
        "pressure:\n"
        "  disk: none\n"
        "reconciliation_status: ready\n"
        f"last_reconciled_at: {flat['last_reconciled_at']}\n"
        f"created_at: {flat['created_at']}\n"
        f"updated_at: {flat['updated_at']}\n"
    )
    assert json.loads(ok(cli("pool", "get", pool["id"], "-o", "json"))) == flat
    doc = yaml.safe_load(ok(cli("pool", "get", pool["id"], "-o", "yaml")))
    assert doc == {
        "apiVersion": "otherix/v1",
        "kind": "StoragePool",
        "metadata": {"name": "fast"},
        "spec": {"type": "local_dir", "path": FAST, "node": "node-a"},
    }


def test_get_yaml_of_a_shared_path_is_one_manifest_with_a_node_list(cli, api):
    two_nodes_with_fast(api)
    text = ok(cli("pool", "get", "fast", "-o", "yaml"))
    docs = list(yaml.safe_load_all(text))
    assert len(docs) == 1
    (doc,) = docs
    assert doc["apiVersion"] == "otherix/v1"
    assert doc["kind"] == "StoragePool"
    assert doc["metadata"] == {"name": "fast"}
    assert doc["spec"]["type"] == "local_dir"
    assert doc["spec"]["path"] == FAST
    assert sorted(doc["spec"]["nodeList"]) == ["node-a", "node-b"]
    assert "id:" not in text
    assert "is_cluster_default" not in text

    # Different paths: one document per instance.
    create_pool(api, "mixed", "node-a", FAST + "-a")
    create_pool(api, "mixed", "node-b", FAST + "-b")
    docs = list(yaml.safe_load_all(ok(cli("pool", "get", "mixed", "-o", "yaml"))))
    assert sorted(d["spec"]["node"] for d in docs) == ["node-a", "node-b"]


def test_get_unknown_pool(cli, api):
    assert failed(cli("pool", "get", "nope")) == (
        "Error: pool \"nope\" not found; run 'otherix pool list' to see the pools\n"
    )
    assert failed(cli("pool", "get", "00000000-0000-4000-8000-000000000000")) == (
        'Error: pool "00000000-0000-4000-8000-000000000000" not found; '
        "run 'otherix pool list' to see the pools\n"
    )


# capacity in parts (issue 16) -----------------------------------------------------------------

GIB = 1 << 30
USAGE = {
    "vm_disk_bytes": 10 * GIB,
    "vm_provisioned_bytes": 150 * GIB,
    "image_cache_bytes": 2 * GIB,
    "scratch_bytes": GIB,
}


def test_get_shows_usage_on_the_instance_and_summed_on_the_name(cli, api):
    a, b, fa, _ = two_nodes_with_fast(api)
    heartbeat(api, a, [pool_report("fast", capacity=100 * GIB, available=60 * GIB, usage=USAGE)])
    heartbeat(api, b, [pool_report("fast", capacity=100 * GIB, available=90 * GIB)])

    out = ok(cli("pool", "get", fa["id"]))
    lines = out.splitlines()
    start = lines.index("usage:")
    assert lines[start : start + 6] == [
        "usage:",
        "  vm_disks: 10.0GiB",
        "  vm_provisioned: 150.0GiB (overcommit 1.5x)",
        "  image_cache: 2.0GiB",
        "  scratch: 1.0GiB",
        "  other: 27.0GiB",
    ]

    concept = ok(cli("pool", "get", "fast")).splitlines()
    assert "capacity_bytes: 200.0GiB" in concept
    assert "available_bytes: 150.0GiB" in concept
    top = concept.index("usage:")  # node-b's instance was not measured: node-a's alone
    assert concept[top + 1 : top + 3] == [
        "  vm_disks: 10.0GiB",
        "  vm_provisioned: 150.0GiB (overcommit 1.5x)",
    ]
    assert "    usage:" in concept  # node-a's instance block
    assert concept.count("    usage:") == 1

    body = json.loads(ok(cli("pool", "get", fa["id"], "-o", "json")))
    assert body["usage"]["overcommit_ratio"] == 1.5


def test_list_wide_adds_the_parts(cli, api):
    a, _, _, _ = two_nodes_with_fast(api)
    heartbeat(api, a, [pool_report("fast", capacity=100 * GIB, available=60 * GIB, usage=USAGE)])
    out = ok(cli("pool", "list", "-o", "wide", role="viewer"))
    assert out.splitlines()[0].split() == [
        "NAME", "NODE", "TYPE", "PATH", "AVAILABLE", "STATUS", "DEFAULT", "AGE",
        "CAPACITY", "VM-DISKS", "PROVISIONED", "CACHE", "SCRATCH", "OTHER",
    ]  # fmt: skip
    rows = {r["NODE"]: r for r in table(out) if r["NAME"] == "fast"}
    wide = ("CAPACITY", "VM-DISKS", "PROVISIONED", "CACHE", "SCRATCH", "OTHER")
    assert [rows["node-a"][k] for k in wide] == [
        "100.0GiB", "10.0GiB", "150.0GiB", "2.0GiB", "1.0GiB", "27.0GiB",
    ]  # fmt: skip
    assert [rows["node-b"][k] for k in wide] == ["-"] * 6
    ids = table(ok(cli("pool", "list", "-o", "wide", "--show-ids")))
    assert "ID" in ids[0]
    assert "VM-DISKS" in ids[0]
    # the narrow table is unchanged
    assert "VM-DISKS" not in ok(cli("pool", "list")).splitlines()[0]

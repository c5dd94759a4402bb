"""``otherix pool update`` and ``otherix pool scan`` against the real server."""

from __future__ import annotations

import json

from clihelpers import (
    create_pool,
    failed,
    get_json,
    heartbeat,
    join_node,
    ok,
    play_scan_agent,
    usage,
)

from otherix.cli.commands import pools_ops

FAST = "/var/lib/otherix/pools/fast"


def test_update_renames_and_replaces_config(cli, api):
    join_node(api, "node-a")
    pool = create_pool(api, "fast", "node-a", FAST)
    assert ok(cli("pool", "update", "fast", "--name", "faster")) == (
        "pool fast updated\nname: faster\nnode: node-a\nconfig: {}\n"
    )
    out = ok(cli("pool", "update", pool["id"], "--config-json", '{"tier": "ssd"}'))
    assert out.endswith('config: {"tier": "ssd"}\n')
    _, flat = get_json(api, f"/v1/storage-pools/{pool['id']}")
    assert (flat["name"], flat["config"]) == ("faster", {"tier": "ssd"})
    body = json.loads(ok(cli("pool", "update", "faster", "--name", "fast", "-o", "json")))
    assert body["name"] == "fast"


def test_update_resolves_node_and_explains_ambiguity(cli, api):
    join_node(api, "node-a")
    join_node(api, "node-b")
    create_pool(api, "fast", "node-a", FAST)
    fb = create_pool(api, "fast", "node-b", FAST)
    err = failed(cli("pool", "update", "fast", "--name", "x"))
    assert err.startswith('Error: pool "fast" is ambiguous: 2 instances (on nodes ')
    assert "node-a" in err
    assert "node-b" in err
    assert err.endswith("); pass --node <node> or an instance UUID\n")

    out = ok(cli("pool", "update", "fast", "--node", "node-b", "--name", "fast-b"))
    assert out.startswith("pool fast on node node-b updated\nname: fast-b\n")
    assert get_json(api, f"/v1/storage-pools/{fb['id']}")[1]["name"] == "fast-b"


def test_update_usage_and_input_errors(cli, api):
    result = cli("pool", "update", "fast")
    assert result.exit_code == 2
    assert "nothing to update: pass --name and/or --config-json" in result.stderr
    assert usage(cli("pool", "update", "fast", "--config-json", "[1]")) == (
        "Error: --config-json: must be a JSON object\n"
    )
    assert usage(cli("pool", "update", "fast", "--config-json", "{")).startswith(
        "Error: --config-json: invalid JSON: "
    )


def test_scan_prints_the_task_and_waits_for_the_measurement(cli, api):
    node = join_node(api, "node-a")
    pool = create_pool(api, "fast", "node-a", FAST)
    heartbeat(api, node)  # the node is ready

    result = cli("pool", "scan", "fast", role="operator")
    out = ok(result)
    assert out.startswith("scan of pool fast queued: task ")
    task_id = out.split("task ", 1)[1].strip()
    status, task = get_json(api, f"/v1/tasks/{task_id}")
    assert (status, task["type"], task["resource_id"]) == (200, "storage_pool.scan", pool["id"])

    agent = play_scan_agent(
        api, node, pool["id"], result={"capacity_bytes": 100 * 2**30, "available_bytes": 2**30}
    )
    result = cli("pool", "scan", pool["id"], "--wait")
    agent.join(5)
    lines = ok(result).splitlines()
    assert lines[0].startswith("scan of pool " + pool["id"] + " queued: task ")
    assert lines[1:3] == ["capacity: 100.0GiB", "available: 1.0GiB"]
    assert result.stderr.startswith("waiting for scan task ")
    _, flat = get_json(api, f"/v1/storage-pools/{pool['id']}")
    assert (flat["capacity_bytes"], flat["available_bytes"]) == (100 * 2**30, 2**30)


def test_scan_wait_reports_a_failed_task(cli, api):
    node = join_node(api, "node-a")
    pool = create_pool(api, "fast", "node-a", FAST)
    heartbeat(api, node)
    agent = play_scan_agent(
        api, node, pool["id"], status="failed",
        error={"code": "scan_failed", "message": "statfs: no such file or directory"},
    )  # fmt: skip
    result = cli("pool", "scan", "fast", "--wait", "-o", "json")
    agent.join(5)
    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == "failed"
    assert result.stderr.splitlines()[-1] == (
        "Error: pool scan failed: scan_failed: statfs: no such file or directory"
    )


def test_scan_wait_timeout_and_permissions(cli, api, monkeypatch):
    monkeypatch.setattr(pools_ops, "SCAN_WAIT_TIMEOUT", 0.2)
    node = join_node(api, "node-a")
    create_pool(api, "fast", "node-a", FAST)
    heartbeat(api, node)
    result = cli("pool", "scan", "fast", "--wait")
    assert result.exit_code == 1
    assert result.stdout.startswith("scan of pool fast queued: task ")
    task_id = result.stdout.split("task ", 1)[1].strip()
    assert result.stderr == (
        f"waiting for scan task {task_id} (timeout 200ms)…\n"
        f'Error: scan task {task_id} did not finish within 200ms (last status "pending"); '
        "it goes on in the background\n"
    )
    err = failed(cli("pool", "scan", "fast", role="developer"))
    assert err == "Error: permission denied: role developer lacks storage_pool:scan\n"

"""``otherix pool create`` (§5.3) and ``--wait`` (§3.5) against the real server."""

from __future__ import annotations

import json
import time

from clihelpers import failed, get_json, join_node, ok, report_when_created, usage

from otherix.cli.commands import pools_write

FAST = "/var/lib/otherix/pools/fast"
WAITING = "waiting for agent reconciliation (timeout 1m0s)…\n"


def pools_named(api, name):
    status, body = get_json(api, f"/v1/storage-pools/{name}")
    return body["instances"] if status == 200 else []


def test_create_prints_the_instance_and_the_server_has_it(cli, api):
    join_node(api, "node-a")
    result = cli("pool", "create", "fast", "--node", "node-a", "--path", FAST)
    assert ok(result) == (
        "pool fast created on node node-a\n"
        "type: local_dir\n"
        f"path: {FAST}\n"
        "reconciliation_status: pending\n"
    )
    assert result.stderr == ""
    (inst,) = pools_named(api, "fast")
    assert (inst["node"], inst["path"], inst["type"]) == ("node-a", FAST, "local_dir")
    assert inst["config"] == {}


def test_create_show_ids_and_json(cli, api):
    join_node(api, "node-a")
    out = ok(cli("pool", "create", "fast", "--node", "node-a", "--path", FAST, "--show-ids"))
    (inst,) = pools_named(api, "fast")
    assert out.splitlines()[1] == f"id: {inst['id']}"

    body = json.loads(
        ok(cli("pool", "create", "slow", "--node", "node-a", "--path", FAST + "2", "-o", "json"))
    )
    assert body["name"] == "slow"
    assert body["reconciliation_status"] == "pending"
    assert body["images"] == []


def test_duplicate_is_an_already_exists_error(cli, api):
    join_node(api, "node-a")
    ok(cli("pool", "create", "fast", "--node", "node-a", "--path", FAST))
    result = cli("pool", "create", "FAST", "--node", "node-a", "--path", FAST + "-2")
    assert failed(result) == (
        'Error: pool "FAST" already exists on node "node-a" '
        "(inspect it with 'otherix pool get FAST' or choose a different name)\n"
    )
    assert len(pools_named(api, "fast")) == 1


def test_a_path_inside_another_pool_shows_the_overlap_not_already_exists(cli, api):
    join_node(api, "node-a")
    ok(cli("pool", "create", "fast", "--node", "node-a", "--path", FAST))
    result = cli("pool", "create", "inner", "--node", "node-a", "--path", FAST + "/inner")
    err = failed(result)
    assert "already exists" not in err
    inside = f'Error: path "{FAST}/inner" is inside the directory of storage pool "fast"'
    assert err.startswith(inside)
    assert pools_named(api, "inner") == []


def test_path_outside_the_allowlist(cli, api):
    join_node(api, "node-a")
    prefixes = f"{api.server.settings.data_dir}/pools/, /var/lib/otherix/pools/"
    for path in ("/etc/otherix", "/var/lib/otherix/pools-evil/x"):
        err = failed(cli("pool", "create", "evil", "--node", "node-a", "--path", path))
        assert err == (
            f"Error: path is not on the storage_pools allowlist (allowed prefixes: {prefixes})\n"
        )
    assert pools_named(api, "evil") == []


def test_unknown_node_and_permission(cli, api):
    err = failed(cli("pool", "create", "fast", "--node", "node-9", "--path", FAST))
    assert err == "Error: node \"node-9\" not found; run 'otherix node list' to see the nodes\n"
    join_node(api, "node-a")
    err = failed(cli("pool", "create", "fast", "--node", "node-a", "--path", FAST, role="operator"))
    assert err == "Error: permission denied: role operator lacks storage_pool:manage\n"
    assert pools_named(api, "fast") == []


def test_usage_errors_send_nothing(cli, api):
    join_node(api, "node-a")
    result = cli("pool", "create", "fast", "--node", "node-a", "--path", FAST, "-o", "yaml")
    assert usage(result) == 'Error: --output: unknown format "yaml" (text, json)\n'
    result = cli("pool", "create", "fast", "--node", "node-a")
    assert result.exit_code == 2
    assert "Missing option '--path'" in result.stderr
    result = cli("pool", "create", "fast", "--path", FAST)
    assert result.exit_code == 2
    assert "Missing option '--node'" in result.stderr
    assert pools_named(api, "fast") == []


def test_wait_returns_once_the_agent_reports_ready(cli, api):
    node = join_node(api, "node-a")
    agent = report_when_created(api, node, "fast", "ready")
    started = time.monotonic()
    result = cli("pool", "create", "fast", "--node", "node-a", "--path", FAST, "--wait")
    elapsed = time.monotonic() - started
    agent.join(5)
    out = ok(result)
    assert result.stderr == WAITING
    lines = out.splitlines()
    assert lines[:4] == [
        "pool fast created on node node-a",
        "type: local_dir",
        f"path: {FAST}",
        "reconciliation_status: ready",
    ]
    assert lines[4].startswith("last_reconciled_at: ")
    assert elapsed < 3  # backoff starts at 0.1 s, not the reference's fixed 2 s


def test_wait_fails_when_reconciliation_fails(cli, api):
    node = join_node(api, "node-a")
    agent = report_when_created(api, node, "fast", "failed", "mkdir: permission denied")
    result = cli("pool", "create", "fast", "--node", "node-a", "--path", FAST, "--wait")
    agent.join(5)
    assert result.exit_code == 1
    assert (
        result.stderr == WAITING + "Error: pool reconciliation failed: mkdir: permission denied\n"
    )
    assert "reconciliation_status: failed\n" in result.stdout
    assert "reconciliation_error: mkdir: permission denied\n" in result.stdout
    (inst,) = pools_named(api, "fast")
    assert inst["reconciliation_status"] == "failed"


def test_wait_times_out_naming_the_last_status(cli, api, monkeypatch):
    monkeypatch.setattr(pools_write, "WAIT_TIMEOUT", 0.3)
    join_node(api, "node-a")
    result = cli("pool", "create", "fast", "--node", "node-a", "--path", FAST, "--wait")
    assert result.exit_code == 1
    assert result.stderr == (
        "waiting for agent reconciliation (timeout 300ms)…\n"
        "Error: pool fast did not reach 'ready' within 300ms (last status \"pending\"); "
        "check it with 'otherix pool get fast'\n"
    )
    assert "reconciliation_status: pending\n" in result.stdout


def test_wait_with_json_prints_the_final_object(cli, api):
    node = join_node(api, "node-a")
    agent = report_when_created(api, node, "fast", "ready")
    result = cli(
        "pool", "create", "fast", "--node", "node-a", "--path", FAST, "--wait", "-o", "json"
    )
    agent.join(5)
    assert json.loads(ok(result))["reconciliation_status"] == "ready"

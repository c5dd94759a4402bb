"""``otherix vm create`` (with and without ``--wait``) against the real server."""

from __future__ import annotations

import json

from clihelpers import failed, get_json, ok, usage
from test_cli_vms_helpers import (
    IMAGE,
    MIB,
    PacedAgent,
    clock_context,
    created,
    failure,
    frames,
    ready_node,
    ready_pool,
    running,
    vm_of,
)

from support.clock import FakeClock

CREATE = ("vm", "create", "web-1", "--image-url", IMAGE)


def test_create_uses_the_cluster_default_pool(cli, api):
    ready_node(api, "node-a")
    assert ok(cli(*CREATE)) == ("vm web-1 created\npool: default\nnode: node-a\nphase: pending\n")
    vm = vm_of(api, "web-1")
    assert (vm["pool"], vm["architecture"], vm["vcpus"], vm["memory_mb"]) == (
        "default",
        "amd64",
        2,
        2048,
    )
    assert (vm["format"], vm["pull_policy"], vm["disk_gib"]) == ("qcow2", "if-not-present", 0)


def test_create_on_an_explicit_pool_sends_every_flag(cli, api):
    node = ready_node(api, "node-a")
    pool = ready_pool(api, node, "fast")
    out = ok(
        cli(
            *CREATE,
            "--pool",
            pool["id"],
            "--node",
            "node-a",
            "--image-sha256",
            "AB" * 32,
            "--pull-policy",
            "always",
            "--arch",
            "amd64",
            "--vcpus",
            "4",
            "--memory-mb",
            "4096",
            "--format",
            "raw",
            "--disk-gib",
            "10",
            "-o",
            "json",
        )
    )
    vm = json.loads(out)
    assert vm == vm_of(api, "web-1") | {"disks": None}
    assert (vm["pool"], vm["pool_id"], vm["node"], vm["node_hint"]) == (
        "fast",
        pool["id"],
        "node-a",
        "node-a",
    )
    assert (vm["image_sha256"], vm["pull_policy"], vm["format"], vm["disk_gib"]) == (
        "ab" * 32,
        "always",
        "raw",
        10,
    )
    assert (vm["vcpus"], vm["memory_mb"]) == (4, 4096)


def test_create_without_a_default_pool_says_how_to_fix_it(cli, api):
    ready_node(api, "node-a")
    ok(cli("cluster", "unset-default-pool", "--force"))
    assert failed(cli(*CREATE)) == (
        "Error: no --pool given and the cluster default pool is not set "
        "(default_pool_not_set): pass --pool NAME, or set a default with "
        "'otherix cluster set-default-pool NAME'\n"
    )
    assert vm_of(api, "web-1") is None
    ok(cli(*CREATE, "--pool", "default"))  # an explicit pool needs no default


def test_create_errors_from_the_server_and_before_it(cli, api):
    ready_node(api, "node-a")
    ok(cli(*CREATE))
    assert failed(cli(*CREATE)) == ("Error: a VM named 'web-1' already exists\n")
    assert failed(cli("vm", "create", "web-2", "--image-url", "ftp://x/y.img")) == (
        "Error: image_url must be an absolute http:// or https:// URL\n"
    )
    assert usage(cli(*CREATE, "--wait", "--wait-timeout", "soon")) == (
        'Error: --wait-timeout: invalid duration "soon" '
        "(use a number with a unit: ms, s, m, h or d, e.g. 24h)\n"
    )
    assert usage(cli(*CREATE, "-o", "yaml")) == (
        'Error: --output: unknown format "yaml" (text, json)\n'
    )
    result = cli("vm", "create", "web-3")
    assert result.exit_code == 2
    assert "Missing option '--image-url'" in result.stderr


def test_wait_on_a_terminal_shows_bytes_and_rate_then_the_ready_disk(cli, api):
    node = ready_node(api, "node-a")
    base = 312 * MIB
    step = int(48 * MIB * 0.15)  # 48 MiB/s over the CLI's second poll interval (0.15 s)
    agent = PacedAgent(api, node, [running(base), running(base + step), created])
    result = cli(*CREATE, "--wait", tty=True, context=agent.context())
    agent.join()
    assert ok(result) == (
        "vm web-1 created\npool: default\nnode: node-a\nphase: stopped (disk ready)\n"
        "state: running\n"
    )
    assert frames(result.stderr) == [
        "queued ubuntu.img: waiting for the node's agent",
        "downloading ubuntu.img  312.0MiB / 612.0MiB",
        "downloading ubuntu.img  319.2MiB / 612.0MiB  48.0MiB/s",
    ]
    assert result.stderr.endswith("\r")  # the line is erased before the result
    assert vm_of(api, "web-1")["status"]["phase"] == "stopped"


def test_wait_when_piped_prints_only_the_result(cli, api):
    node = ready_node(api, "node-a")
    agent = PacedAgent(api, node, [running(100 * MIB), running(200 * MIB), created])
    result = cli(*CREATE, "--wait", "-o", "json", tty=False, context=agent.context())
    agent.join()
    assert json.loads(ok(result))["status"]["phase"] == "stopped"
    assert result.stderr == ""
    assert "\r" not in result.stdout


def test_wait_failure_exits_1_with_the_reason(cli, api):
    node = ready_node(api, "node-a")
    message = "sha256 of ubuntu.img is 00ff…, expected abab…"
    agent = PacedAgent(api, node, [running(50 * MIB), failure("checksum_mismatch", message)])
    result = cli(*CREATE, "--image-sha256", "ab" * 32, "--wait", context=agent.context())
    agent.join()
    assert failed(result) == f"Error: vm web-1 failed: checksum_mismatch: {message}\n"
    assert result.stdout == (
        "vm web-1 created\npool: default\nnode: node-a\n"
        f"phase: error (checksum_mismatch: {message})\n"
    )


def test_wait_on_an_unplaceable_vm_prints_the_reason_and_times_out(cli, api):
    ready_node(api, "node-a")
    clock = FakeClock(monotonic_start=0.0)
    result = cli(
        *CREATE, "--pool", "ghost", "--wait", "--wait-timeout", "3s", context=clock_context(clock)
    )
    why = 'pool_not_found: pool "ghost" not found in cluster'
    assert failed(result) == (
        f"vm web-1 pending: {why}\n"  # once, however many polls
        f"Error: vm web-1 was not placed within 3s (pending: {why}); the scheduler keeps "
        "trying: check it with 'otherix vm get web-1'\n"
    )
    assert clock.monotonic() == 3.0
    assert result.stdout == f"vm web-1 created\npool: ghost\nnode: -\nphase: pending ({why})\n"
    assert vm_of(api, "web-1")["status"]["phase"] == "pending"  # left admitted


def test_wait_on_a_terminal_shows_the_placement_wait_in_place(cli, api):
    ready_node(api, "node-a")
    result = cli(
        *CREATE,
        "--pool",
        "ghost",
        "--wait",
        "--wait-timeout",
        "1s",
        tty=True,
        context=clock_context(FakeClock(monotonic_start=0.0)),
    )
    assert result.exit_code == 1
    why = 'pool_not_found: pool "ghost" not found in cluster'
    assert frames(result.stderr) == [
        f"vm web-1 pending: {why}",  # a lasting line, then the in-place one
        "waiting for vm web-1 to be placed",
        f"Error: vm web-1 was not placed within 1s (pending: {why}); the scheduler keeps "
        "trying: check it with 'otherix vm get web-1'",
    ]


def test_wait_timeout_while_the_task_runs_points_at_task_wait(cli, api):
    node = ready_node(api, "node-a")
    agent = PacedAgent(api, node, [running(10 * MIB)])
    context = agent.context()
    result = cli(*CREATE, "--wait", "--wait-timeout", "2s", context=context)
    agent.join()
    _, tasks = get_json(api, "/v1/tasks?type=vm.create")
    task_id = tasks["data"][0]["id"]
    assert failed(result) == (
        f"Error: vm web-1 is not ready after 2s: task {task_id} is running (1%); it goes on "
        f"in the background: follow it with 'otherix task wait {task_id}'\n"
    )
    assert "phase: creating" in result.stdout


def test_a_developer_waits_on_its_own_vm_and_a_viewer_cannot_create(cli, api):
    node = ready_node(api, "node-a")
    agent = PacedAgent(api, node, [running(MIB), created])
    result = cli(*CREATE, "--wait", role="developer", context=agent.context())
    agent.join()
    assert ok(result).endswith("phase: stopped (disk ready)\nstate: running\n")
    assert failed(cli("vm", "create", "web-2", "--image-url", IMAGE, role="viewer")) == (
        "Error: permission denied: role viewer lacks vm:create\n"
    )

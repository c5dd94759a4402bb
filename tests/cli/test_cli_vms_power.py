"""``otherix vm start|stop|restart|poweroff``, ``vm console``, the power fields of
``vm create``, ``vm delete --force`` of a running VM, and the observed state in
``vm list`` / ``vm get`` (docs/vm-runtime.md), against the real server.

The node's agent is played by posting its task reports (``PacedAgent`` for the
``--wait`` runs) and heartbeats carrying ``vms`` observations.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from clihelpers import DIGEST, Node, failed, get_json, heartbeat_body, ok, table, usage
from test_cli_vms_helpers import (
    IMAGE,
    PacedAgent,
    agent_report,
    clock_context,
    created,
    desired_tasks,
    failure,
    frames,
    make_vm,
    ready_node,
    vm_of,
)

from otherix.cli.commands import vms as vms_commands
from otherix.cli.commands.vms import _new_lines
from otherix.cli.views.vms import created_text, state_text
from support.clock import FakeClock

VERBS = [
    ("start", "starting"),
    ("stop", "stopping"),
    ("restart", "restarting"),
    ("poweroff", "powering off"),
]


# helpers ---------------------------------------------------------------------------------


def ready_vm(api: Any, name: str = "web-1", node: Node | None = None, **fields: Any):
    """A VM on node-a whose vm.create succeeded (disk ready): (node, vm)."""
    if node is None:
        node = ready_node(api, "node-a")
    vm = make_vm(api, name, **fields)
    [task] = [t for t in desired_tasks(api, node) if t["args"].get("vm_id") == vm["id"]]
    agent_report(api, node, task["id"], **created(task))
    return node, vm_of(api, name)


def beat(api: Any, node: Node, vms: list[dict[str, Any]]) -> None:
    """A heartbeat as the node's agent reporting ``vms`` observations."""
    body = heartbeat_body([], digest=DIGEST, vms=vms)
    with api.client(None) as c:
        r = c.post(f"/v1/nodes/{node.name}/heartbeat", json=body, headers=node.auth)
        assert r.status_code == 200, r.text


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def task_of(api: Any, task_id: str) -> dict[str, Any]:
    status, body = get_json(api, f"/v1/tasks/{task_id}")
    assert status == 200, body
    return dict(body)


def vm_tasks(api: Any, vm_id: str) -> list[dict[str, Any]]:
    _, body = get_json(api, f"/v1/tasks?resource_id={vm_id}&limit=200")
    return list(body["data"])


# 1. the verbs without --wait -------------------------------------------------------------


@pytest.mark.parametrize(("verb", "ing"), VERBS)
def test_a_verb_without_wait_prints_the_task_it_made(cli, api, verb, ing):
    node, vm = ready_vm(api, power_state="stopped")
    out = ok(cli("vm", verb, "web-1"))
    after = vm_of(api, "web-1")
    task_id = after["status"]["task_id"]
    assert out == f"vm web-1 {ing} (task {task_id})\n"
    [task] = desired_tasks(api, node)
    assert (task["id"], task["type"], task["args"]["vm_id"]) == (task_id, f"vm.{verb}", vm["id"])
    assert task["args"]["timeout_seconds"] == 60  # no --timeout: the server's default
    assert after["power_state"] == ("running" if verb in ("start", "restart") else "stopped")
    # the same verb again while its task is unfinished answers that task
    assert ok(cli("vm", verb, "web-1")) == out
    assert len(desired_tasks(api, node)) == 1


# 2. --wait ---------------------------------------------------------------------------------


def test_start_wait_prints_the_running_state(cli, api):
    node, _ = ready_vm(api, power_state="stopped")
    started = iso(datetime.now(UTC) - timedelta(seconds=182))

    def started_ok(task: dict[str, Any]) -> dict[str, Any]:
        observed = {
            "id": task["args"]["vm_id"],
            "state": "running",
            "pid": 4343,
            "accelerator": "tcg",
            "started_at": started,
        }
        return {"status": "success", "result": observed}

    agent = PacedAgent(api, node, [started_ok], task_type="vm.start")
    result = cli("vm", "start", "web-1", "--wait", tty=True, context=agent.context())
    agent.join()
    out = ok(result)
    assert re.fullmatch(r"vm web-1 running \(pid 4343, tcg, up 3m[0-9]+s\)\n", out), out
    assert frames(result.stderr) == ["queued vm web-1: waiting for the node's agent"]
    assert result.stderr.endswith("\r")  # the line is erased before the result
    status = vm_of(api, "web-1")["status"]
    assert (status["state"], status["runtime"]["pid"]) == ("running", 4343)
    assert task_of(api, status["task_id"])["status"] == "success"


def test_stop_wait_when_piped_prints_only_the_state_left(cli, api):
    node, vm = ready_vm(api)
    stopped = {"status": "success", "result": {"id": vm["id"], "state": "stopped"}}
    agent = PacedAgent(api, node, [stopped], task_type="vm.stop")
    result = cli("vm", "stop", "web-1", "--wait", context=agent.context())
    agent.join()
    assert ok(result) == "vm web-1 stopped\n"
    assert result.stderr == ""


def test_start_wait_failure_exits_1_with_the_task_error(cli, api):
    node, _ = ready_vm(api, power_state="stopped")
    message = "qemu-system-x86_64: -drive file=disk.qcow2: Could not open: Permission denied"
    agent = PacedAgent(api, node, [failure("vm_start_failed", message)], task_type="vm.start")
    result = cli("vm", "start", "web-1", "--wait", context=agent.context())
    agent.join()
    assert failed(result) == f"Error: vm web-1 start failed: vm_start_failed: {message}\n"
    assert result.stdout == ""
    # the server records the failed start as the VM's observed state
    assert f"state: failed ({message})\n" in ok(cli("vm", "get", "web-1"))


def test_a_failure_without_a_message_still_reads(cli, api):
    node, _ = ready_vm(api)
    report = {"status": "failed", "error": {"code": "vm_stop_failed"}}
    agent = PacedAgent(api, node, [report], task_type="vm.poweroff")
    result = cli("vm", "poweroff", "web-1", "--wait", context=agent.context())
    agent.join()
    assert failed(result) == "Error: vm web-1 poweroff failed: vm_stop_failed: no message\n"


@pytest.mark.parametrize(("verb", "ing"), VERBS)
def test_wait_timeout_says_how_to_follow_the_task(cli, api, verb, ing):
    ready_vm(api, power_state="stopped")
    clock = FakeClock(monotonic_start=0.0)
    result = cli(
        "vm", verb, "web-1", "--wait", "--wait-timeout", "2s", context=clock_context(clock)
    )
    task_id = vm_of(api, "web-1")["status"]["task_id"]
    assert failed(result) == (
        f"Error: vm web-1 is still {ing} after 2s (task {task_id} pending); "
        f"follow it with 'otherix task wait {task_id}'\n"
    )
    assert clock.monotonic() == 2.0
    assert result.stdout == ""
    assert task_of(api, task_id)["status"] == "pending"  # left to the agent


# 3. --timeout and bad durations ------------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "value", "seconds"),
    [("stop", "2m", 120), ("restart", "90s", 90), ("stop", "1h", 3600)],
)
def test_timeout_is_sent_in_seconds(cli, api, verb, value, seconds):
    node, _ = ready_vm(api)
    ok(cli("vm", verb, "web-1", "--timeout", value))
    [task] = desired_tasks(api, node)
    assert (task["type"], task["args"]["timeout_seconds"]) == (f"vm.{verb}", seconds)


def test_bad_durations_are_usage_errors_and_make_no_task(cli, api):
    node, _ = ready_vm(api)
    soon = '"soon" (use a number with a unit: ms, s, m, h or d, e.g. 24h)\n'
    assert usage(cli("vm", "stop", "web-1", "--timeout", "soon")) == (
        f"Error: --timeout: invalid duration {soon}"
    )
    assert usage(cli("vm", "restart", "web-1", "--timeout", "0s")) == (
        "Error: --timeout: must be more than 0s\n"
    )
    assert usage(cli("vm", "start", "web-1", "--wait", "--wait-timeout", "soon")) == (
        f"Error: --wait-timeout: invalid duration {soon}"
    )
    assert usage(cli("vm", "poweroff", "web-1", "--wait-timeout", "0s")) == (
        "Error: --wait-timeout: must be more than 0s\n"
    )
    # start and poweroff take no --timeout (no guest shutdown to wait for)
    for verb in ("start", "poweroff"):
        err = usage(cli("vm", verb, "web-1", "--timeout", "2m"))
        assert err == "Error: No such option '--timeout'. Did you mean '--wait-timeout'?\n"
    assert desired_tasks(api, node) == []


def test_a_timeout_out_of_range_is_a_usage_error(cli, api):
    node, _ = ready_vm(api)
    for text in ("2h", "500ms"):
        err = usage(cli("vm", "stop", "web-1", "--timeout", text))
        assert err == f'Error: --timeout: "{text}" must be from 1s to 1h\n'
    assert desired_tasks(api, node) == []
    ok(cli("vm", "stop", "web-1", "--timeout", "1500ms"))  # rounded up, never down
    [task] = desired_tasks(api, node)
    assert task["args"]["timeout_seconds"] == 2


# 4. refusals ---------------------------------------------------------------------------------


def test_a_vm_whose_disk_is_not_ready_is_refused(cli, api):
    ready_node(api, "node-a")
    make_vm(api, "web-1", pool="ghost")  # pending: never placed
    assert failed(cli("vm", "start", "web-1")) == (
        "Error: VM web-1 is pending: only a VM whose disk is ready can be started\n"
    )
    assert failed(cli("vm", "stop", "web-1", "--wait")) == (
        "Error: VM web-1 is pending: only a VM whose disk is ready can be stopped\n"
    )
    vm = vm_of(api, "web-1")
    assert vm_tasks(api, vm["id"]) == []


def test_a_creating_vm_is_refused(cli, api):
    node = ready_node(api, "node-a")
    make_vm(api, "web-1")
    [task] = desired_tasks(api, node)
    agent_report(api, node, task["id"], status="running", progress=5)
    assert failed(cli("vm", "restart", "web-1")) == (
        "Error: VM web-1 is creating: only a VM whose disk is ready can be started\n"
    )


def test_another_verb_while_a_power_task_is_unfinished_is_a_conflict(cli, api):
    node, _ = ready_vm(api)
    out = ok(cli("vm", "stop", "web-1"))
    task_id = vm_of(api, "web-1")["status"]["task_id"]
    assert out == f"vm web-1 stopping (task {task_id})\n"
    message = (
        f"Error: VM web-1 has a vm.stop task in progress ({task_id}); "
        f"wait for it ('otherix task wait {task_id}')\n"
    )
    assert failed(cli("vm", "start", "web-1")) == message
    assert failed(cli("vm", "poweroff", "web-1", "--wait")) == message
    assert [t["type"] for t in desired_tasks(api, node)] == ["vm.stop"]
    # once the agent reports it, the next verb goes ahead
    agent_report(api, node, task_id, status="success", result={})
    ok(cli("vm", "start", "web-1"))
    assert [t["type"] for t in desired_tasks(api, node)] == ["vm.start"]


def test_unknown_vm_and_a_viewer_are_refused(cli, api):
    ready_vm(api)
    assert failed(cli("vm", "start", "nope")) == (
        "Error: VM \"nope\" not found; run 'otherix vm list' to see the VMs\n"
    )
    assert failed(cli("vm", "stop", "web-1", role="viewer")) == (
        "Error: permission denied: role viewer lacks vm:update\n"
    )


# 5. console ----------------------------------------------------------------------------------


def test_console_prints_the_lines_the_last_heartbeat_carried(cli, api):
    node, vm = ready_vm(api)
    beat(api, node, [{"id": vm["id"], "state": "running", "pid": 7, "console": ["a", "b"]}])
    lines = ["[    0.000000] Linux version 6.8.0", "", "web-1 login: "]
    observed = {
        "id": vm["id"],
        "state": "running",
        "pid": 7,
        "accelerator": "tcg",
        "started_at": iso(datetime.now(UTC)),
        "console": lines,
    }
    beat(api, node, [observed])
    result = cli("vm", "console", "web-1", role="viewer")
    assert ok(result) == "".join(f"{line}\n" for line in lines)
    assert result.stderr == ""


def test_console_never_hands_the_guests_escape_sequences_to_the_terminal(cli, api):
    node, vm = ready_vm(api)
    hostile = ["\x1b]52;c;cm0gLXJmIH4=\x07copied", "\x1b[2J\x1b[31mred", "tab\tkept\x9bcsi"]
    beat(api, node, [{"id": vm["id"], "state": "crashed", "console": hostile}])
    out = ok(cli("vm", "console", "web-1"))
    assert out == ("\\x1b]52;c;cm0gLXJmIH4=\\x07copied\n\\x1b[2J\\x1b[31mred\ntab\tkept\\x9bcsi\n")
    text = ok(cli("vm", "get", "web-1"))
    assert "\x1b" not in text
    assert "  \\x1b[2J\\x1b[31mred\n" in text


def test_console_of_a_vm_with_no_report_prints_nothing(cli, api):
    ready_node(api, "node-a")
    make_vm(api, "web-1", pool="ghost")
    result = cli("vm", "console", "web-1")
    assert ok(result) == ""
    assert result.stderr == ""
    assert failed(cli("vm", "console", "nope")) == (
        "Error: VM \"nope\" not found; run 'otherix vm list' to see the VMs\n"
    )


def test_console_follow_prints_each_line_once_until_ctrl_c(cli, api, monkeypatch):
    node, vm = ready_vm(api)

    def observed(lines: list[str]) -> dict[str, Any]:
        return {"id": vm["id"], "state": "running", "pid": 7, "console": lines}

    beat(api, node, [observed(["boot 1", "boot 2", "boot 3"])])
    slept: list[float] = []

    def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 1:  # the window slid: boot 1 fell out, two lines are new
            beat(api, node, [observed(["boot 2", "boot 3", "login: ", "login: "])])
        else:
            raise KeyboardInterrupt

    # the command calls time.sleep through its module's ``time``; replacing that name
    # (not the real time.sleep) keeps the in-process server's threads untouched
    monkeypatch.setattr(vms_commands, "time", SimpleNamespace(sleep=fake_sleep))
    result = cli("vm", "console", "web-1", "-f", "--interval", "2s")
    assert ok(result) == "boot 1\nboot 2\nboot 3\nlogin: \nlogin: \n"
    assert slept == [2.0, 2.0]
    assert result.stderr == ""


def test_console_follow_with_nothing_new_prints_nothing_more(cli, api, monkeypatch):
    node, vm = ready_vm(api)
    beat(api, node, [{"id": vm["id"], "state": "running", "console": ["only line"]}])
    calls = []

    def fake_sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(vms_commands, "time", SimpleNamespace(sleep=fake_sleep))
    assert ok(cli("vm", "console", "web-1", "--follow")) == "only line\n"
    assert calls == [1.0, 1.0, 1.0]  # the default --interval


def test_console_bad_interval_is_a_usage_error(cli, api):
    ready_vm(api)
    assert usage(cli("vm", "console", "web-1", "-f", "--interval", "0s")) == (
        "Error: --interval: must be more than 0s\n"
    )


@pytest.mark.parametrize(
    ("before", "now", "new"),
    [
        ([], ["a", "b"], ["a", "b"]),  # nothing printed yet: everything
        ([], [], []),
        (["a", "b", "c"], ["b", "c", "d", "e"], ["d", "e"]),  # overlap of two
        (["a", "b", "c"], ["c", "d"], ["d"]),  # overlap of one
        (["a", "b"], ["x", "y"], ["x", "y"]),  # no overlap (a new console): all of it
        (["a", "b", "c"], ["a", "b", "c"], []),  # identical: nothing new
        (["a", "b", "c"], ["b", "c"], []),  # the tail only shrank
        (["x", "x"], ["x", "x", "x"], ["x"]),  # the longest overlap wins
        (["a", "b"], [], []),
    ],
)
def test_new_lines(before, now, new):
    assert _new_lines(before, now) == new


# 6. create --no-start --restart-policy --------------------------------------------------------


def test_create_no_start_with_a_restart_policy(cli, api):
    node = ready_node(api, "node-a")
    out = ok(
        cli(
            "vm",
            "create",
            "web-1",
            "--image-url",
            IMAGE,
            "--no-start",
            "--restart-policy",
            "never",
        )
    )
    assert out == "vm web-1 created\npool: default\nnode: node-a\nphase: pending\n"
    vm = vm_of(api, "web-1")
    assert (vm["power_state"], vm["restart_policy"]) == ("stopped", "never")
    [task] = desired_tasks(api, node)
    assert not task["args"].get("start")
    agent_report(api, node, task["id"], **created(task))
    text = ok(cli("vm", "get", "web-1"))
    assert "state: stopped\npower_state: stopped (desired)\nrestart_policy: never\n" in text
    assert "last console lines:" not in text
    rows = table(ok(cli("vm", "list")))
    assert [(r["NAME"], r["PHASE"], r["STATE"]) for r in rows] == [("web-1", "stopped", "stopped")]


def test_create_defaults_leave_the_power_fields_to_the_server(cli, api):
    node = ready_node(api, "node-a")
    ok(cli("vm", "create", "web-1", "--image-url", IMAGE, "--restart-policy", "always"))
    vm = vm_of(api, "web-1")
    assert (vm["power_state"], vm["restart_policy"]) == ("running", "always")
    [task] = desired_tasks(api, node)
    assert task["args"]["start"]
    result = cli("vm", "create", "web-2", "--image-url", IMAGE, "--restart-policy", "sometimes")
    assert result.exit_code == 2
    assert "'sometimes' is not one of 'always', 'on-failure', 'never'" in result.stderr
    assert vm_of(api, "web-2") is None


def test_create_wait_no_start_is_done_once_the_disk_is_ready(cli, api):
    node = ready_node(api, "node-a")
    agent = PacedAgent(api, node, [created])
    create = ("vm", "create", "web-1", "--image-url", IMAGE, "--no-start", "--wait")
    result = cli(*create, context=agent.context())
    agent.join()
    assert ok(result) == (
        "vm web-1 created\npool: default\nnode: node-a\nphase: stopped (disk ready)\n"
        "state: stopped\n"
    )


def test_create_wait_whose_start_failed_shows_why_and_exits_1(cli, api):
    node = ready_node(api, "node-a")
    why = "qemu-system-x86_64: failed to initialize kvm: Permission denied"

    def start_failed(task: dict[str, Any]) -> dict[str, Any]:
        report = created(task)
        report["result"]["power"] = {"id": task["args"]["vm_id"], "state": "failed", "detail": why}
        return report

    agent = PacedAgent(api, node, [start_failed])
    result = cli("vm", "create", "web-1", "--image-url", IMAGE, "--wait", context=agent.context())
    agent.join()
    assert failed(result) == (
        f"Error: vm web-1's disk is ready but it did not start: failed ({why})\n"
    )
    assert result.stdout == (
        "vm web-1 created\npool: default\nnode: node-a\nphase: stopped (disk ready)\n"
        f"state: failed ({why})\n"
    )


# 7. delete --force of a running VM --------------------------------------------------------------


def test_force_delete_of_a_running_vm_asks_its_agent_to_power_it_off(cli, api):
    node, vm = ready_vm(api)
    beat(api, node, [{"id": vm["id"], "state": "running", "pid": 7}])
    out = ok(cli("vm", "delete", "web-1", "--force"))
    task_id = vm_of(api, "web-1")["status"]["task_id"]
    assert out == f"vm web-1 deleting (task {task_id})\n"
    [task] = desired_tasks(api, node)
    assert (task["id"], task["type"], task["args"]["force"]) == (task_id, "vm.delete", True)
    assert vm_of(api, "web-1")["status"]["phase"] == "deleting"


def test_delete_of_a_stopped_vm_without_force_sends_force_false(cli, api):
    node, _ = ready_vm(api, power_state="stopped")
    result = cli("vm", "delete", "web-1", tty=True, input="y\n")
    task_id = vm_of(api, "web-1")["status"]["task_id"]
    assert ok(result) == f"vm web-1 deleting (task {task_id})\n"
    assert result.stderr == "delete vm web-1? [y/N]: "
    [task] = desired_tasks(api, node)
    assert (task["id"], task["type"], task["args"]["force"]) == (task_id, "vm.delete", False)


def test_delete_of_a_running_vm_confirmed_on_a_terminal_is_refused(cli, api):
    node, vm = ready_vm(api)
    beat(api, node, [{"id": vm["id"], "state": "running", "pid": 7}])
    result = cli("vm", "delete", "web-1", tty=True, input="y\n")
    assert failed(result) == (
        "delete vm web-1? [y/N]: Error: VM web-1 is running: stop it first "
        "('otherix vm stop web-1'), or delete it with --force, which powers it off\n"
    )
    after = vm_of(api, "web-1")
    assert (after["status"]["phase"], after["status"]["state"]) == ("stopped", "running")
    assert [t["type"] for t in vm_tasks(api, vm["id"])] == ["vm.create"]


def test_force_delete_cancels_an_unfinished_power_task(cli, api):
    node, _ = ready_vm(api)
    ok(cli("vm", "stop", "web-1"))
    stop_id = vm_of(api, "web-1")["status"]["task_id"]
    ok(cli("vm", "delete", "web-1", "--force"))
    assert task_of(api, stop_id)["status"] == "cancelled"
    assert [t["type"] for t in desired_tasks(api, node)] == ["vm.delete"]


# 8. observed state in list and get ------------------------------------------------------------


def test_a_crashed_vm_in_list_and_get(cli, api):
    node, vm = ready_vm(api)
    make_vm(api, "web-2", pool="ghost")
    console = [f"line {i}" for i in range(1, 13)]
    crashed = {
        "id": vm["id"],
        "state": "crashed",
        "pid": 4242,
        "exit_status": -9,
        "detail": "killed by SIGKILL",
        "restarts": 3,
        "limits": "restart limit reached (3 in 10m)",
        "console": console,
    }
    beat(api, node, [crashed])
    rows = table(ok(cli("vm", "list")))
    assert [(r["NAME"], r["PHASE"], r["STATE"]) for r in rows] == [
        ("web-1", "stopped", "crashed"),
        ("web-2", "pending", "-"),
    ]
    body = vm_of(api, "web-1")
    text = ok(cli("vm", "get", "web-1"))
    assert (
        "phase: stopped (disk ready)\n"
        "state: crashed (killed by SIGKILL)\n"
        "power_state: running (desired)\n"
        "restart_policy: on-failure\n"
        "restarts: 3\n"
        "limits: restart limit reached (3 in 10m)\n"
        f"task: {body['status']['task_id']}\n"
        "last console lines:\n" + "".join(f"  line {i}\n" for i in range(3, 13)) + "disks:\n"
    ) in text
    pending = ok(cli("vm", "get", "web-2"))
    assert "state: -\npower_state: running (desired)\n" in pending
    assert "restarts:" not in pending


def test_a_crash_the_policy_restarts_says_when(cli, api):
    node, vm = ready_vm(api)
    when = datetime.now(UTC) + timedelta(seconds=8)
    crashed = {
        "id": vm["id"],
        "state": "crashed",
        "exit_status": 1,
        "detail": "exit status 1",
        "restarts": 1,
        "next_restart_at": iso(when),
    }
    beat(api, node, [crashed])
    body = vm_of(api, "web-1")
    shown = body["status"]["runtime"]["next_restart_at"]
    assert datetime.fromisoformat(shown) == when
    text = ok(cli("vm", "get", "web-1"))
    assert f"state: crashed (exit status 1, restarting at {shown})\n" in text
    assert "restarts: 1\n" in text
    assert "last console lines:" not in text  # no lines reported


def test_a_running_vm_in_get_hides_its_console(cli, api):
    node, vm = ready_vm(api)
    observed = {
        "id": vm["id"],
        "state": "stopping",
        "pid": 99,
        "accelerator": "kvm",
        "started_at": iso(datetime.now(UTC) - timedelta(hours=2, minutes=5)),
        "console": ["still here"],
    }
    beat(api, node, [observed])
    text = ok(cli("vm", "get", "web-1"))
    assert re.search(r"^state: stopping \(pid 99, kvm, up 2h[56]m\)$", text, re.M), text
    assert "last console lines:" not in text  # shown for crashed or failed VMs only
    assert table(ok(cli("vm", "list")))[0]["STATE"] == "stopping"


# views without a server -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "text"),
    [
        ({"phase": "pending"}, "-"),
        ({"phase": "stopped", "state": "stopped"}, "stopped"),
        ({"phase": "stopped", "state": "running"}, "running"),
        (
            {
                "phase": "stopped",
                "state": "running",
                "runtime": {"pid": 4242, "accelerator": "tcg", "uptime_seconds": 182},
            },
            "running (pid 4242, tcg, up 3m2s)",
        ),
        (
            {"phase": "stopped", "state": "starting", "runtime": {"uptime_seconds": 0}},
            "starting (up 0s)",
        ),
        (
            {"phase": "stopped", "state": "running", "runtime": {"uptime_seconds": 59}},
            "running (up 59s)",
        ),
        (
            {"phase": "stopped", "state": "running", "runtime": {"uptime_seconds": 3 * 3600 + 61}},
            "running (up 3h1m)",
        ),
        (
            {"phase": "stopped", "state": "running", "runtime": {"uptime_seconds": 90061}},
            "running (up 1d1h)",
        ),
        (
            {
                "phase": "stopped",
                "state": "crashed",
                "runtime": {"pid": 1, "detail": "killed by SIGKILL", "uptime_seconds": 5},
            },
            "crashed (killed by SIGKILL)",  # not live: no pid, no uptime
        ),
        (
            {"phase": "stopped", "state": "failed", "runtime": {"detail": "no kvm"}},
            "failed (no kvm)",
        ),
        ({"phase": "stopped", "state": "crashed", "runtime": {}}, "crashed"),
        (
            {"phase": "stopped", "state": "stopped", "runtime": {"detail": "ignored"}},
            "stopped",
        ),
        (
            {
                "phase": "stopped",
                "state": "crashed",
                "runtime": {"detail": "exit 1", "next_restart_at": "2026-12-03T10:00:08Z"},
            },
            "crashed (exit 1, restarting at 2026-12-03T10:00:08Z)",
        ),
    ],
)
def test_state_text(status, text):
    assert state_text({"status": status}) == text


def test_created_text_state_line_is_bare_but_keeps_the_detail():
    base = {"name": "web-1", "pool": "default", "node": "node-a"}
    head = "vm web-1 created\npool: default\nnode: node-a\nphase: stopped (disk ready)\n"
    running = {"phase": "stopped", "state": "running", "runtime": {"pid": 1, "uptime_seconds": 9}}
    assert created_text({**base, "status": running}) == head + "state: running\n"
    failed_start = {"phase": "stopped", "state": "failed", "runtime": {"detail": "no kvm"}}
    assert created_text({**base, "status": failed_start}) == head + "state: failed (no kvm)\n"
    assert created_text({**base, "status": {"phase": "pending"}}) == (
        "vm web-1 created\npool: default\nnode: node-a\nphase: pending\n"
    )

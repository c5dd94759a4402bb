"""``otherix vm delete``: unplaced (204), placed (202 → vm.delete task), prompt, --wait."""

from __future__ import annotations

from clihelpers import failed, get_json, ok, usage
from test_cli_vms_helpers import (
    PacedAgent,
    agent_report,
    clock_context,
    created,
    desired_tasks,
    failure,
    frames,
    make_vm,
    ready_node,
    success,
    vm_of,
)

from support.clock import FakeClock


def placed_vm(api, name="web-1"):
    node = ready_node(api, "node-a")
    make_vm(api, name)
    [task] = desired_tasks(api, node)
    agent_report(api, node, task["id"], **created(task))
    return node


def test_delete_an_unplaced_vm_is_immediate(cli, api):
    ready_node(api, "node-a")
    make_vm(api, "web-1", pool="ghost")
    assert ok(cli("vm", "delete", "--force", "web-1")) == "vm web-1 deleted\n"
    assert vm_of(api, "web-1") is None
    assert failed(cli("vm", "delete", "--force", "web-1")) == (
        "Error: VM \"web-1\" not found; run 'otherix vm list' to see the VMs\n"
    )


def test_delete_a_placed_vm_starts_a_task(cli, api):
    placed_vm(api)
    out = ok(cli("vm", "delete", "--force", "web-1"))
    vm = vm_of(api, "web-1")
    task_id = vm["status"]["task_id"]
    assert out == f"vm web-1 deleting (task {task_id})\n"
    assert vm["status"]["phase"] == "deleting"
    _, task = get_json(api, f"/v1/tasks/{task_id}")
    assert (task["type"], task["status"], task["resource_id"]) == ("vm.delete", "pending", vm["id"])
    # asking again while it runs answers the same task
    assert ok(cli("vm", "delete", "--force", "web-1")) == out


def test_delete_prompts_on_a_terminal(cli, api):
    ready_node(api, "node-a")
    make_vm(api, "web-1", pool="ghost")
    result = cli("vm", "delete", "web-1", tty=True, input="n\n")
    assert failed(result) == "delete vm web-1? [y/N]: Error: aborted: did not delete vm web-1\n"
    assert result.stdout == ""
    assert vm_of(api, "web-1") is not None
    result = cli("vm", "delete", "web-1")  # no terminal, no --force
    assert usage(result) == (
        "Error: refusing to delete vm web-1 without confirmation: stdin is not a terminal; "
        "pass --force to delete vm web-1 without being asked\n"
    )
    assert vm_of(api, "web-1") is not None
    result = cli("vm", "delete", "web-1", tty=True, input="y\n")
    assert ok(result) == "vm web-1 deleted\n"
    result = cli("vm", "delete", "web-2", "--force", tty=True)
    assert failed(result) == (  # no prompt
        "Error: VM \"web-2\" not found; run 'otherix vm list' to see the VMs\n"
    )


def test_delete_wait_follows_the_task_until_the_disk_is_gone(cli, api):
    node = placed_vm(api)
    agent = PacedAgent(api, node, [success()], task_type="vm.delete")
    result = cli("vm", "delete", "web-1", "--force", "--wait", tty=True, context=agent.context())
    agent.join()
    assert ok(result) == "vm web-1 deleted\n"
    assert frames(result.stderr) == ["queued vm web-1: waiting for the node's agent"]
    assert vm_of(api, "web-1") is None


def test_delete_wait_failure_and_timeout(cli, api):
    node = placed_vm(api)
    agent = PacedAgent(api, node, [failure("vm_delete_failed", "disk busy")], task_type="vm.delete")
    result = cli("vm", "delete", "--force", "web-1", "--wait", context=agent.context())
    agent.join()
    assert failed(result) == "Error: vm web-1 delete failed: vm_delete_failed: disk busy\n"
    assert result.stdout == ""
    assert vm_of(api, "web-1")["status"]["phase"] == "error"

    make_vm(api, "web-2")
    [task] = [t for t in desired_tasks(api, node) if t["type"] == "vm.create"]
    agent_report(api, node, task["id"], **created(task))
    result = cli(
        "vm",
        "delete",
        "web-2",
        "--force",
        "--wait",
        "--wait-timeout",
        "1s",
        context=clock_context(FakeClock(monotonic_start=0.0)),
    )
    task_id = vm_of(api, "web-2")["status"]["task_id"]
    assert failed(result) == (
        f"Error: vm web-2 is still deleting after 1s (task {task_id} pending); "
        f"follow it with 'otherix task wait {task_id}'\n"
    )

"""``otherix task list|get|wait|cancel`` against the real server."""

from __future__ import annotations

import json

from clihelpers import failed, get_json, ok, table
from test_cli_vms_helpers import (
    GIB,
    MIB,
    PacedAgent,
    agent_report,
    clock_context,
    created,
    desired_tasks,
    failure,
    frames,
    make_vm,
    ready_node,
    running,
    vm_of,
)

from support.clock import FakeClock


def create_task(api, vm="web-1"):
    """A ready node and a placed VM whose vm.create task is pending."""
    node = ready_node(api, "node-a")
    make_vm(api, vm)
    [task] = [t for t in desired_tasks(api, node) if t["args"]["vm_id"] == vm_of(api, vm)["id"]]
    return node, task["id"]


def test_list_with_filters(cli, api):
    node, first = create_task(api)
    make_vm(api, "web-2")
    second = vm_of(api, "web-2")["status"]["task_id"]
    agent_report(api, node, second, **running(10 * MIB))
    rows = table(ok(cli("task", "list")))
    vm1, vm2 = vm_of(api, "web-1"), vm_of(api, "web-2")
    assert [{k: v for k, v in r.items() if k != "AGE"} for r in rows] == [
        {
            "ID": first,
            "TYPE": "vm.create",
            "STATUS": "pending",
            "PROGRESS": "0%",
            "RESOURCE": f"vm/{vm1['id']}",
        },
        {
            "ID": second,
            "TYPE": "vm.create",
            "STATUS": "running",
            "PROGRESS": "1%",
            "RESOURCE": f"vm/{vm2['id']}",
        },
    ]
    assert [r["ID"] for r in table(ok(cli("task", "list", "--status", "running")))] == [second]
    assert ok(cli("task", "list", "--type", "storage_pool.scan")) == (
        "ID  TYPE  STATUS  PROGRESS  RESOURCE  AGE\n"
    )
    body = json.loads(ok(cli("task", "list", "--limit", "1", "-o", "json")))
    assert [t["id"] for t in body["data"]] == [first]
    assert body["meta"]["next_cursor"]
    out = ok(cli("task", "list", "--limit", "1"))
    assert f" task list --limit 1 --cursor {body['meta']['next_cursor']}\n" in out
    assert failed(cli("task", "list", "--status", "done"), code=2)


def test_get_text_and_json(cli, api):
    node, task_id = create_task(api)
    vm = vm_of(api, "web-1")
    agent_report(api, node, task_id, **running(312 * MIB))
    out = ok(cli("task", "get", task_id))
    _, task = get_json(api, f"/v1/tasks/{task_id}")
    assert out == (
        f"id: {task_id}\n"
        "type: vm.create\n"
        "status: running\n"
        "progress: 50%\n"
        f"resource: vm/{vm['id']}\n"
        "attempts: 1/3\n"  # vm.create: the agent's tasks.vm_create_attempts default
        "detail: downloading  312.0MiB / 612.0MiB\n"
        f"created_at: {task['created_at']}\n"
        f"started_at: {task['started_at']}\n"
    )
    agent_report(api, node, task_id, **failure("checksum_mismatch", "bad sum"))
    out = ok(cli("task", "get", task_id))
    assert "status: failed\n" in out
    assert "error: checksum_mismatch: bad sum\n" in out
    assert "finished_at: " in out
    assert json.loads(ok(cli("task", "get", task_id, "-o", "json")))["error"] == {
        "code": "checksum_mismatch",
        "message": "bad sum",
    }
    assert failed(cli("task", "get", "nope")) == (
        "Error: task \"nope\" not found; run 'otherix task list' to see the tasks\n"
    )


def test_wait_shows_progress_on_a_terminal(cli, api):
    node, task_id = create_task(api)
    steps = [
        running(0, None, "verify"),
        running(5 * MIB, None),
        running(MIB, GIB, "clone"),
        created,
    ]
    agent = PacedAgent(api, node, steps)
    result = cli("task", "wait", task_id, tty=True, context=agent.context())
    agent.join()
    assert ok(result) == f"task {task_id} succeeded\n"
    assert frames(result.stderr) == [
        "queued: waiting for the node's agent",
        "verify  0B",  # a phase the CLI has no word for is shown as sent
        "downloading  5.0MiB",  # a new phase starts a new rate
        "cloning  1.0MiB / 1.0GiB",
    ]


def test_wait_piped_is_quiet_and_fails_with_the_error(cli, api):
    node, task_id = create_task(api)
    agent = PacedAgent(api, node, [running(MIB), failure("checksum_mismatch", "bad sum")])
    result = cli("task", "wait", task_id, context=agent.context())
    agent.join()
    assert failed(result) == f"Error: task {task_id} failed: checksum_mismatch: bad sum\n"
    assert result.stdout == ""
    again = cli(
        "task", "wait", task_id, context=clock_context(FakeClock(monotonic_start=0.0))
    )  # finished: no polling
    assert failed(again) == f"Error: task {task_id} failed: checksum_mismatch: bad sum\n"


def test_wait_on_a_finished_task_answers_at_once(cli, api):
    node, task_id = create_task(api)
    agent_report(api, node, task_id, **created({"args": {"vm_id": "x", "pool_path": "/p"}}))
    assert ok(cli("task", "wait", task_id)) == f"task {task_id} succeeded\n"


def test_wait_timeout_and_cancel(cli, api):
    _, task_id = create_task(api)
    clock = FakeClock(monotonic_start=0.0)
    result = cli("task", "wait", task_id, "--timeout", "2s", context=clock_context(clock))
    assert failed(result) == (
        f"Error: task {task_id} did not finish within 2s (status pending, 0%); "
        "it goes on in the background\n"
    )
    assert clock.monotonic() == 2.0

    assert ok(cli("task", "cancel", task_id)) == f"task {task_id} cancelled\n"
    vm = vm_of(api, "web-1")
    assert (vm["status"]["phase"], vm["status"]["reason"]) == ("error", "cancelled")
    assert failed(cli("task", "wait", task_id)) == f"Error: task {task_id} was cancelled\n"
    assert failed(cli("task", "cancel", task_id)) == ("Error: task is already finished\n")


def test_cancel_a_running_create_is_refused(cli, api):
    node, task_id = create_task(api)
    agent_report(api, node, task_id, **running(MIB))
    assert failed(cli("task", "cancel", task_id)) == (
        "Error: tasks of type vm.create can only be cancelled while pending\n"
    )
    out = json.loads(ok(cli("task", "get", task_id, "-o", "json")))
    assert out["status"] == "running"


def test_cancel_json_and_a_deleted_vm_cancels_its_task(cli, api):
    _, task_id = create_task(api)
    body = json.loads(ok(cli("task", "cancel", task_id, "-o", "json")))
    assert (body["id"], body["status"]) == (task_id, "cancelled")

    make_vm(api, "web-2")
    other = vm_of(api, "web-2")["status"]["task_id"]
    ok(cli("vm", "delete", "web-2", "--force"))
    assert failed(cli("task", "wait", other)) == (
        f"Error: task {other} was cancelled (cancelled: the VM was deleted)\n"
    )

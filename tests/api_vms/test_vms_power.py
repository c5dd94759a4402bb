"""Power verbs, observed VM state and the console: ``POST /v1/vms/{name}/{verb}``, the
power task outcomes, heartbeat ``vms``, ``GET /v1/vms/{name}/console`` and the delete
of a VM whose QEMU runs (docs/vm-runtime.md, docs/error-codes.md).

One server for the module (``shared_api``); every test names its nodes, pools and
VMs with a unique prefix (``px``). The agent is played by posting its heartbeats and
task reports; a few flows run on each backend (``api_any_backend``).
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from test_vms_helpers import (
    DIGEST,
    agent_report,
    create_result,
    create_vm,
    desired_tasks,
    error_of,
    get,
    get_vm,
    heartbeat,
    node_with_pool,
    report,
)

from otherix.rbac import Role
from otherix.store.nodes import store as qn
from support.factories import ROLE_PASSWORD, Node, heartbeat_body, http

#: rounds of the concurrent-verbs race
ROUNDS = 20


@pytest.fixture
def api(shared_api):
    return shared_api


# helpers ---------------------------------------------------------------------------------


def _ready_vm(
    api: Any, px: str, node: Node | None = None, n: int = 1, **fields: Any
) -> tuple[Node, dict[str, Any], dict[str, Any]]:
    """A VM whose vm.create succeeded (phase stopped, disk ready): (node, vm, create task)."""
    if node is None:
        node = node_with_pool(api, f"{px}-a", f"{px}-p")
    vm = create_vm(api, f"{px}-{n}", pool=f"{px}-p", **fields)
    assert vm["node"] == node.name
    [create] = [t for t in desired_tasks(api, node) if t["args"]["vm_id"] == vm["id"]]
    result = create_result(vm, create["args"]["pool_path"])
    assert agent_report(api, node, create["id"], "success", result=result).status_code == 200
    view = get_vm(api, vm["name"])
    assert (view["status"]["phase"], view["status"]["state"]) == ("stopped", "stopped")
    return node, view, create


def _power(api: Any, name: str, verb: str, role: str | None = "developer", **body: Any) -> Any:
    with api.client(role) as c:
        if body:
            return c.post(f"/v1/vms/{name}/{verb}", json=body)
        return c.post(f"/v1/vms/{name}/{verb}")


def _accepted(r: Any) -> str:
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["links"] == {"self": f"/v1/tasks/{body['task_id']}"}
    return str(body["task_id"])


def _beat(api: Any, node: Node, vms: Any = None, *pools: dict[str, Any], **extra: Any) -> Any:
    """A heartbeat as the node's agent with ``vms`` observations (None: key left out)."""
    body = heartbeat_body(list(pools), digest=DIGEST, **extra)
    if vms is not None:
        body["vms"] = vms
    with api.client(None) as c:
        return c.post(f"/v1/nodes/{node.name}/heartbeat", json=body, headers=node.auth)


def _ok_beat(api: Any, node: Node, vms: Any = None, *pools: dict[str, Any]) -> None:
    r = _beat(api, node, vms, *pools)
    assert r.status_code == 200, r.text


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def _other_developer(api: Any, px: str) -> str:
    """A second developer's token (on a shared server: a test-unique user)."""
    username = f"{px}-dev2"
    api.server.add_user(username, ROLE_PASSWORD, Role.DEVELOPER)
    return str(api.server.login(username, ROLE_PASSWORD))


def _task(api: Any, task_id: str) -> dict[str, Any]:
    r = get(api, f"/v1/tasks/{task_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _status(api: Any, name: str) -> dict[str, Any]:
    return dict(get_vm(api, name)["status"])


# 1. start / stop / restart / poweroff ------------------------------------------------------


def test_start_makes_a_vm_start_task_with_the_launch_args(api, px):
    node, vm, create = _ready_vm(api, px, power_state="stopped", restart_policy="always")
    assert vm["power_state"] == "stopped"
    assert desired_tasks(api, node) == []

    r = _power(api, vm["name"], "start")
    task_id = _accepted(r)
    assert r.json()["status"] == "pending"
    [task] = desired_tasks(api, node)
    assert (task["id"], task["type"]) == (task_id, "vm.start")
    assert task["args"] == {
        "vm_id": vm["id"],
        "pool_name": f"{px}-p",
        "pool_path": create["args"]["pool_path"],
        "format": "qcow2",
        "timeout_seconds": 60,
        "name": vm["name"],
        "vcpus": 2,
        "memory_mb": 2048,
        "restart_policy": "always",
    }
    after = get_vm(api, vm["name"])
    assert after["power_state"] == "running"
    assert after["status"]["task_id"] == task_id
    assert after["status"]["phase"] == "stopped"  # the phase is the disk's, not QEMU's
    view = _task(api, task_id)
    assert (view["type"], view["resource_type"], view["resource_id"]) == (
        "vm.start",
        "vm",
        vm["id"],
    )
    assert view["max_attempts"] == 1


def test_the_same_verb_answers_the_unfinished_task_another_verb_is_409(api, px):
    node, vm, _ = _ready_vm(api, px)
    name = vm["name"]
    start = _accepted(_power(api, name, "start"))
    assert _accepted(_power(api, name, "start")) == start
    # operators share the answer too: it is the VM's task, not the caller's
    assert _accepted(_power(api, name, "start", role="operator")) == start
    for verb in ("stop", "restart", "poweroff"):
        err = error_of(_power(api, name, verb), 409, "conflict")
        assert err["details"] == {
            "reason": "power_task_in_progress",
            "task_id": start,
            "type": "vm.start",
        }, verb
    assert [t["id"] for t in desired_tasks(api, node)] == [start]

    # the agent picked it up: still unfinished, still the same answer (with its status)
    assert agent_report(api, node, start, "running").status_code == 200
    r = _power(api, name, "start")
    assert (_accepted(r), r.json()["status"]) == (start, "running")
    error_of(_power(api, name, "stop"), 409, "conflict")

    assert agent_report(api, node, start, "success", result={}).status_code == 200
    assert desired_tasks(api, node) == []
    stop = _accepted(_power(api, name, "stop", timeout_seconds=30))
    assert stop != start
    [task] = desired_tasks(api, node)
    assert (task["id"], task["type"]) == (stop, "vm.stop")
    assert task["args"]["timeout_seconds"] == 30
    vm_now = get_vm(api, name)
    assert (vm_now["power_state"], vm_now["status"]["task_id"]) == ("stopped", stop)

    # once done, the same verb makes a new task (it is not answered from a finished one)
    assert agent_report(api, node, stop, "success", result={}).status_code == 200
    again = _accepted(_power(api, name, "stop"))
    assert again != stop
    assert agent_report(api, node, again, "failed", error={"code": "x"}).status_code == 200
    assert _accepted(_power(api, name, "start")) not in (start, stop, again)


@pytest.mark.parametrize(
    ("verb", "after"),
    [("start", "running"), ("restart", "running"), ("stop", "stopped"), ("poweroff", "stopped")],
)
def test_each_verb_sets_the_desired_power_state(api, px, verb, after):
    first = "stopped" if after == "running" else "running"
    node, vm, _ = _ready_vm(api, px, power_state=first)
    assert vm["power_state"] == first
    task_id = _accepted(_power(api, vm["name"], verb, timeout_seconds=3600))
    [task] = desired_tasks(api, node)
    assert (task["id"], task["type"], task["args"]["timeout_seconds"]) == (
        task_id,
        f"vm.{verb}",
        3600,
    )
    vm_now = get_vm(api, vm["name"])
    assert (vm_now["power_state"], vm_now["status"]["task_id"]) == (after, task_id)


@pytest.mark.parametrize(
    "body",
    [{"timeout_seconds": 0}, {"timeout_seconds": 3601}, {"timeout_seconds": "10"}, {"x": 1}],
)
def test_a_bad_power_body_is_400_and_makes_nothing(api, px, body):
    node, vm, _ = _ready_vm(api, px)
    with api.client("developer") as c:
        error_of(c.post(f"/v1/vms/{vm['name']}/start", json=body), 400, "validation_failed")
    assert desired_tasks(api, node) == []
    assert get_vm(api, vm["name"])["status"]["task_id"] == vm["status"]["task_id"]


def test_power_on_an_unknown_vm_is_404_and_anonymous_is_401(api, px):
    error_of(_power(api, f"{px}-nothing", "start"), 404, "not_found")
    error_of(_power(api, f"{px}-nothing", "start", role=None), 401, "unauthenticated")
    with api.client("developer") as c:
        error_of(c.get(f"/v1/vms/{px}-nothing/console"), 404, "not_found")


# 2. refusals -------------------------------------------------------------------------------


def _assert_refused(api, name, verb, reason, code="vm_not_startable"):
    before = get_vm(api, name)
    err = error_of(_power(api, name, verb), 409, code)
    assert err["details"]["reason"] == reason, err
    after = get_vm(api, name)
    assert after["power_state"] == before["power_state"]
    assert after["status"]["task_id"] == before["status"]["task_id"]
    return err


def test_a_vm_whose_disk_is_not_ready_is_not_startable(api, px):
    node = node_with_pool(api, f"{px}-a", f"{px}-p")
    create_vm(api, f"{px}-unplaced", pool=f"{px}-nowhere")
    for verb in ("start", "restart", "stop", "poweroff"):
        err = _assert_refused(api, f"{px}-unplaced", verb, "vm_not_ready")
        assert err["details"]["phase"] == "pending"

    vm = create_vm(api, f"{px}-1", pool=f"{px}-p")
    [create] = desired_tasks(api, node)
    err = _assert_refused(api, vm["name"], "start", "vm_not_ready")
    assert err["details"]["phase"] == "pending"
    assert agent_report(api, node, create["id"], "running", progress=5).status_code == 200
    err = _assert_refused(api, vm["name"], "start", "vm_not_ready")
    assert err["details"]["phase"] == "creating"
    assert [t["id"] for t in desired_tasks(api, node)] == [create["id"]]  # nothing added
    error = {"code": "download_failed", "message": "404"}
    assert agent_report(api, node, create["id"], "failed", error=error).status_code == 200
    err = _assert_refused(api, vm["name"], "restart", "vm_not_ready")
    assert err["details"]["phase"] == "error"
    assert desired_tasks(api, node) == []


def test_a_vm_whose_pool_failed_is_not_startable(api, px):
    node, vm, _ = _ready_vm(api, px)
    failed = report(f"{px}-p", status="failed", error="marker gone")
    heartbeat(api, node, {**failed, "reconciliation_reason": "marker_missing"})
    assert get_vm(api, vm["name"])["status"]["reason"] == "disk_missing"
    for verb in ("start", "restart"):
        err = _assert_refused(api, vm["name"], verb, "pool_failed")
        assert (err["details"]["pool"], err["details"]["pool_reason"]) == (
            f"{px}-p",
            "marker_missing",
        )
    assert desired_tasks(api, node) == []
    # stopping needs no disk: only starts are refused
    stop = _accepted(_power(api, vm["name"], "stop"))
    assert [t["id"] for t in desired_tasks(api, node)] == [stop]
    assert agent_report(api, node, stop, "success").status_code == 200
    heartbeat(api, node, report(f"{px}-p"))  # the pool is back
    _accepted(_power(api, vm["name"], "start"))


def test_a_vm_whose_disk_file_is_missing_is_not_startable(api, px):
    node, vm, _ = _ready_vm(api, px)
    [disk] = vm["disks"]
    heartbeat(api, node, report(f"{px}-p", missing_disks=[disk["id"]]))
    assert get_vm(api, vm["name"])["disks"][0]["missing_reason"] == "file_missing"
    for verb in ("start", "restart"):
        err = _assert_refused(api, vm["name"], verb, "disk_missing")
        assert err["details"]["pool"] == f"{px}-p"
    assert desired_tasks(api, node) == []
    heartbeat(api, node, report(f"{px}-p", missing_disks=[]))  # found again
    _accepted(_power(api, vm["name"], "restart"))


def test_a_vm_whose_node_is_unreachable_cannot_be_powered(api, px):
    node, vm, _ = _ready_vm(api, px)
    with api.server.deps.db.write() as conn:
        qn.update_node(conn, node.id, {"status": "unreachable"})
    for verb in ("start", "restart"):
        err = _assert_refused(api, vm["name"], verb, "node_unreachable")
        assert (err["details"]["node"], err["details"]["node_status"]) == (
            node.name,
            "unreachable",
        )
    for verb in ("stop", "poweroff"):
        err = _assert_refused(api, vm["name"], verb, "node_unreachable", code="conflict")
        assert err["details"]["node_status"] == "unreachable"
    assert desired_tasks(api, node) == []
    heartbeat(api, node)  # back: promoted to ready
    task_id = _accepted(_power(api, vm["name"], "stop"))
    assert [t["id"] for t in desired_tasks(api, node)] == [task_id]


# 3. who may ----------------------------------------------------------------------------------


@pytest.mark.security
def test_power_rbac_owner_operator_admin_may_others_may_not(api, px):
    node, vm, _ = _ready_vm(api, px)  # the developer's
    name = vm["name"]
    other = _other_developer(api, px)
    with http(api, token=other) as c:
        error_of(c.post(f"/v1/vms/{name}/start"), 404, "not_found")
        error_of(c.post(f"/v1/vms/{name}/stop"), 404, "not_found")
        error_of(c.get(f"/v1/vms/{name}/console"), 404, "not_found")
    for verb in ("start", "stop", "restart", "poweroff"):
        err = error_of(_power(api, name, verb, role="viewer"), 403, "permission_denied")
        assert err["details"] == {"required": "vm:update"}
    assert desired_tasks(api, node) == []

    for role, verb in (("developer", "start"), ("operator", "stop"), ("admin", "restart")):
        task_id = _accepted(_power(api, name, verb, role=role))
        [task] = desired_tasks(api, node)
        assert (task["id"], task["type"]) == (task_id, f"vm.{verb}"), role
        assert agent_report(api, node, task_id, "success").status_code == 200

    # an operator's own VM: the developer does not see it at all
    create_vm(api, f"{px}-ops", role="operator", pool=f"{px}-p")
    error_of(_power(api, f"{px}-ops", "start"), 404, "not_found")


# 4. power task outcomes ----------------------------------------------------------------------


def test_start_success_with_an_observation_shows_the_runtime(api, px):
    node, vm, _ = _ready_vm(api, px)
    name = vm["name"]
    task_id = _accepted(_power(api, name, "start"))
    started = datetime.now(UTC) - timedelta(seconds=120)
    observed = {
        "id": vm["id"],
        "state": "running",
        "pid": 123,
        "accelerator": "tcg",
        "started_at": _iso(started),
        "limits": "cgroup v1: memory 2048 MiB (+256 MiB for QEMU), cpu 2",
    }
    assert agent_report(api, node, task_id, "success", result=observed).status_code == 200
    status = _status(api, name)
    assert (status["phase"], status["state"], status["task_id"]) == ("stopped", "running", task_id)
    runtime = status["runtime"]
    assert runtime["pid"] == 123
    assert runtime["accelerator"] == "tcg"
    assert runtime["limits"] == observed["limits"]
    assert datetime.fromisoformat(runtime["started_at"]) == started
    assert isinstance(runtime["uptime_seconds"], int)
    assert 120 <= runtime["uptime_seconds"] < 120 + 300
    assert runtime["restarts"] == 0
    assert runtime["console_tail"] == []
    assert runtime["observed_at"] is not None
    # every role that sees the VM sees its state
    assert get_vm(api, name, role="viewer")["status"]["state"] == "running"
    assert get_vm(api, name, role="developer")["status"]["runtime"]["pid"] == 123

    # stopped: no pid, no uptime shown
    stop = _accepted(_power(api, name, "stop"))
    stopped = {"id": vm["id"], "state": "stopped", "pid": 123, "exit_status": 0}
    assert agent_report(api, node, stop, "success", result=stopped).status_code == 200
    status = _status(api, name)
    assert status["state"] == "stopped"
    assert (status["runtime"]["pid"], status["runtime"]["uptime_seconds"]) == (None, None)
    assert status["runtime"]["exit_status"] == 0


def test_a_vm_start_failed_shows_failed_with_the_message(api, px):
    node, vm, _ = _ready_vm(api, px)
    task_id = _accepted(_power(api, vm["name"], "start"))
    message = "qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory"
    error = {"code": "vm_start_failed", "message": message}
    assert agent_report(api, node, task_id, "failed", error=error).status_code == 200
    status = _status(api, vm["name"])
    assert (status["phase"], status["reason"]) == ("stopped", None)  # the disk is fine
    assert status["state"] == "failed"
    assert status["runtime"]["detail"] == message
    assert status["runtime"]["pid"] is None
    assert _task(api, task_id)["error"] == error
    # a failed start is a finished task: the VM takes a verb again
    _accepted(_power(api, vm["name"], "start"))


def test_other_outcomes_leave_the_runtime_as_it_was(api, px):
    node, vm, _ = _ready_vm(api, px)
    name = vm["name"]
    running = {"id": vm["id"], "state": "running", "pid": 50, "started_at": _iso(datetime.now(UTC))}
    _ok_beat(api, node, [running])
    assert _status(api, name)["runtime"]["pid"] == 50

    outcomes: list[tuple[str, dict[str, Any]]] = [
        ("failed", {"error": {"code": "vm_stop_failed", "message": "QMP timeout"}}),
        ("success", {"result": {}}),  # no observation in the result
        ("success", {"result": {"state": "exploded", "id": vm["id"]}}),  # malformed: ignored
        ("success", {}),
    ]
    for status, fields in outcomes:
        task_id = _accepted(_power(api, name, "stop"))
        r = agent_report(api, node, task_id, status, **fields)
        assert r.status_code == 200, (fields, r.text)
        assert _task(api, task_id)["status"] == status
        seen = _status(api, name)
        assert (seen["state"], seen["runtime"]["pid"]) == ("running", 50), fields


# 5. heartbeat vms ----------------------------------------------------------------------------


def test_heartbeat_vms_are_stored_and_shown(api, px):
    node, vm1, _ = _ready_vm(api, px)
    _, vm2, _ = _ready_vm(api, px, node=node, n=2)
    other = node_with_pool(api, f"{px}-b", f"{px}-q")
    vm3 = create_vm(api, f"{px}-3", pool=f"{px}-q")
    assert vm3["node"] == other.name
    started = datetime.now(UTC) - timedelta(seconds=30)
    next_restart = datetime.now(UTC) + timedelta(seconds=8)
    console = [f"line {i}" for i in range(15)]
    observations = [
        {
            "id": vm1["id"].upper(),  # ids compare case-insensitively
            "state": "running",
            "pid": 4242,
            "accelerator": "kvm",
            "started_at": _iso(started),
            "restarts": 2,
            "console": console,
        },
        {
            "id": vm2["id"],
            "state": "crashed",
            "pid": 99,
            "exit_status": -9,
            "detail": "killed by signal 9 (SIGKILL)",
            "restarts": 1,
            "next_restart_at": _iso(next_restart),
            "console": console,
        },
        {"id": vm3["id"], "state": "running", "pid": 7},  # another node's VM
        {"id": str(uuid.uuid4()), "state": "running", "pid": 8},  # unknown
    ]
    _ok_beat(api, node, observations)

    s1 = _status(api, vm1["name"])
    assert (s1["state"], s1["runtime"]["pid"], s1["runtime"]["accelerator"]) == (
        "running",
        4242,
        "kvm",
    )
    assert s1["runtime"]["restarts"] == 2
    assert 30 <= s1["runtime"]["uptime_seconds"] < 30 + 300
    assert s1["runtime"]["console_tail"] == []  # only crashed or failed VMs show it
    s2 = _status(api, vm2["name"])
    assert s2["state"] == "crashed"
    assert s2["runtime"]["pid"] is None  # not live: no pid, no uptime
    assert s2["runtime"]["uptime_seconds"] is None
    assert (s2["runtime"]["exit_status"], s2["runtime"]["detail"]) == (
        -9,
        "killed by signal 9 (SIGKILL)",
    )
    assert s2["runtime"]["restarts"] == 1
    assert datetime.fromisoformat(s2["runtime"]["next_restart_at"]) == next_restart
    assert s2["runtime"]["console_tail"] == console[-10:]
    # the other node's VM (still pending its create) is untouched
    s3 = _status(api, vm3["name"])
    assert (s3["phase"], s3["state"], s3["runtime"]) == ("pending", None, None)
    # listed VMs carry the state too
    listed = {
        v["name"]: v["status"]["state"] for v in get(api, "/v1/vms", pool=f"{px}-p").json()["data"]
    }
    assert listed == {vm1["name"]: "running", vm2["name"]: "crashed"}

    # vms: null (left out) leaves everything as it was
    _ok_beat(api, node)
    kept = _status(api, vm1["name"])
    assert (kept["state"], kept["runtime"]["pid"]) == ("running", 4242)
    assert kept["runtime"]["observed_at"] == s1["runtime"]["observed_at"]
    assert _status(api, vm2["name"])["state"] == "crashed"

    # a report without vm1: its row goes, and a ready disk reads stopped again
    _ok_beat(api, node, [observations[1]])
    s1 = _status(api, vm1["name"])
    assert (s1["state"], s1["runtime"]) == ("stopped", None)
    assert _status(api, vm2["name"])["state"] == "crashed"
    # an empty list: the agent knows no VM at all
    _ok_beat(api, node, [])
    assert (_status(api, vm2["name"])["state"], _status(api, vm2["name"])["runtime"]) == (
        "stopped",
        None,
    )


def test_a_heartbeat_replaces_a_changed_observation(api, px):
    node, vm, _ = _ready_vm(api, px)
    obs = {"id": vm["id"], "state": "starting", "pid": 10}
    _ok_beat(api, node, [obs])
    first = _status(api, vm["name"])
    assert (first["state"], first["runtime"]["pid"]) == ("starting", 10)
    _ok_beat(api, node, [obs])  # unchanged
    assert _status(api, vm["name"])["runtime"]["observed_at"] == first["runtime"]["observed_at"]
    _ok_beat(api, node, [{**obs, "state": "failed", "detail": "no QMP", "console": ["a", "b"]}])
    now = _status(api, vm["name"])
    assert (now["state"], now["runtime"]["detail"], now["runtime"]["console_tail"]) == (
        "failed",
        "no QMP",
        ["a", "b"],
    )


def _too_long() -> str:
    return "x" * 1025


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"state": "exploded"}, "vms.0.state"),
        ({"console": [_too_long()]}, "vms.0.console.0"),
        ({"console": ["ok"] * 101}, "vms.0.console"),
        ({"pid": 0}, "vms.0.pid"),
        ({"accelerator": "hvf"}, "vms.0.accelerator"),
        ({"id": ""}, "vms.0.id"),
        ({"restarts": -1}, "vms.0.restarts"),
        ({"surprise": True}, "vms.0.surprise"),
    ],
    ids=["state", "console-line", "console-lines", "pid", "accelerator", "id", "restarts", "extra"],
)
def test_a_malformed_observation_is_400_and_changes_nothing(api, px, bad, field):
    node, vm, _ = _ready_vm(api, px)
    good = {"id": vm["id"], "state": "running", "pid": 5}
    _ok_beat(api, node, [good])
    before = _status(api, vm["name"])
    err = error_of(_beat(api, node, [{**good, **bad}]), 400, "validation_failed")
    assert [f["field"] for f in err["details"]["fields"]] == [field], err
    assert _status(api, vm["name"]) == before


def test_observations_at_the_limits_are_accepted(api, px):
    node, vm, _ = _ready_vm(api, px)
    lines = [f"{i:04d}" + "y" * 1020 for i in range(100)]
    assert all(len(line) == 1024 for line in lines)
    _ok_beat(api, node, [{"id": vm["id"], "state": "crashed", "console": lines}])
    assert _status(api, vm["name"])["runtime"]["console_tail"] == lines[-10:]


def test_a_runtime_for_a_vm_not_in_phase_stopped_is_shown_too(api, px):
    # a VM whose create is still pending has no runtime but its node may know it
    node = node_with_pool(api, f"{px}-a", f"{px}-p")
    vm = create_vm(api, f"{px}-1", pool=f"{px}-p")
    assert _status(api, vm["name"])["state"] is None
    _ok_beat(api, node, [{"id": vm["id"], "state": "stopped"}])
    assert _status(api, vm["name"])["state"] == "stopped"


# 6. console -----------------------------------------------------------------------------------


def test_console_shows_the_lines_last_reported(api, px):
    node, vm, _ = _ready_vm(api, px)
    name = vm["name"]
    with api.client("developer") as c:
        body = c.get(f"/v1/vms/{name}/console").json()
    assert body == {"name": name, "state": "stopped", "lines": [], "observed_at": None}

    lines = [f"[    {i}.000000] boot message {i}" for i in range(50)]
    _ok_beat(api, node, [{"id": vm["id"], "state": "running", "pid": 3, "console": lines}])
    for role in ("developer", "viewer", "operator", "admin"):
        with api.client(role) as c:
            r = c.get(f"/v1/vms/{name}/console")
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["name"], body["state"], body["lines"]) == (name, "running", lines), role
        assert body["observed_at"] is not None
        assert body["observed_at"] == _status(api, name)["runtime"]["observed_at"]

    _ok_beat(api, node, [{"id": vm["id"], "state": "running", "pid": 3, "console": lines[-3:]}])
    with api.client("developer") as c:
        assert c.get(f"/v1/vms/{name}/console").json()["lines"] == lines[-3:]

    other = _other_developer(api, px)
    with http(api, token=other) as c:
        error_of(c.get(f"/v1/vms/{name}/console"), 404, "not_found")
    with api.client(None) as c:
        error_of(c.get(f"/v1/vms/{name}/console"), 401, "unauthenticated")


def test_console_of_a_pending_vm_has_no_state(api, px):
    create_vm(api, f"{px}-1", pool=f"{px}-nowhere")
    with api.client("developer") as c:
        body = c.get(f"/v1/vms/{px}-1/console").json()
    assert body == {"name": f"{px}-1", "state": None, "lines": [], "observed_at": None}


# 7. delete ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "refused"),
    [
        ("starting", True),
        ("running", True),
        ("stopping", True),
        ("stopped", False),
        ("crashed", False),
        ("failed", False),
    ],
)
def test_delete_is_refused_while_qemu_is_there(api, px, state, refused):
    node, vm, _ = _ready_vm(api, px)
    _ok_beat(api, node, [{"id": vm["id"], "state": state}])
    with api.client("developer") as c:
        r = c.delete(f"/v1/vms/{vm['name']}")
    if refused:
        err = error_of(r, 409, "vm_running")
        assert err["details"]["state"] == state
        status = _status(api, vm["name"])
        assert (status["phase"], status["task_id"]) == ("stopped", vm["status"]["task_id"])
        assert desired_tasks(api, node) == []
    else:
        task_id = _accepted(r)
        [task] = desired_tasks(api, node)
        assert (task["id"], task["type"], task["args"]["force"]) == (task_id, "vm.delete", False)


def test_force_delete_of_a_running_vm_and_the_agent_refusing(api, px):
    node, vm, create = _ready_vm(api, px)
    name = vm["name"]
    running = {"id": vm["id"], "state": "running", "pid": 77}
    _ok_beat(api, node, [running])
    with api.client("developer") as c:
        error_of(c.delete(f"/v1/vms/{name}"), 409, "vm_running")
        r = c.delete(f"/v1/vms/{name}", params={"force": "true"})
    delete = _accepted(r)
    [task] = desired_tasks(api, node)
    assert (task["id"], task["type"]) == (delete, "vm.delete")
    assert task["args"]["force"] is True
    assert task["args"]["vm_id"] == vm["id"]
    assert task["args"]["pool_path"] == create["args"]["pool_path"]
    assert _status(api, name)["phase"] == "deleting"

    # the agent found it running after all and refused: nothing was removed
    error = {"code": "vm_running", "message": "QEMU is running"}
    assert agent_report(api, node, delete, "failed", error=error).status_code == 200
    status = _status(api, name)
    assert (status["phase"], status["reason"], status["message"]) == ("stopped", None, None)
    assert status["state"] == "running"
    assert len(get_vm(api, name)["disks"]) == 1

    # forced again, and this time it goes: the runtime row goes with the VM
    with api.client("developer") as c:
        again = _accepted(c.delete(f"/v1/vms/{name}", params={"force": True}))
    assert again != delete
    assert agent_report(api, node, again, "success").status_code == 200
    assert get(api, f"/v1/vms/{name}").status_code == 404
    _ok_beat(api, node, [running])  # a late observation of the deleted VM is ignored
    assert get(api, f"/v1/vms/{name}").status_code == 404


def test_a_delete_failure_with_another_code_is_an_error(api, px):
    node, vm, _ = _ready_vm(api, px)
    with api.client("developer") as c:
        delete = _accepted(c.delete(f"/v1/vms/{vm['name']}"))
    error = {"code": "vm_delete_failed", "message": "EBUSY"}
    assert agent_report(api, node, delete, "failed", error=error).status_code == 200
    status = _status(api, vm["name"])
    assert (status["phase"], status["reason"]) == ("error", "vm_delete_failed")


@pytest.mark.parametrize("picked_up", [False, True], ids=["pending", "running"])
def test_a_delete_cancels_an_unfinished_power_task(api, px, picked_up):
    node, vm, _ = _ready_vm(api, px)
    start = _accepted(_power(api, vm["name"], "start"))
    if picked_up:
        assert agent_report(api, node, start, "running").status_code == 200
    with api.client("developer") as c:
        delete = _accepted(c.delete(f"/v1/vms/{vm['name']}"))
    task = _task(api, start)
    assert task["status"] == "cancelled"
    assert task["error"]["code"] == "cancelled"
    assert [(t["id"], t["type"]) for t in desired_tasks(api, node)] == [(delete, "vm.delete")]
    status = _status(api, vm["name"])
    assert (status["phase"], status["task_id"]) == ("deleting", delete)
    # no verb while deleting, and the cancelled start's late success changes nothing
    err = error_of(_power(api, vm["name"], "start"), 409, "vm_not_startable")
    assert err["details"]["reason"] == "vm_not_ready"
    late = {"id": vm["id"], "state": "running", "pid": 1}
    assert agent_report(api, node, start, "success", result=late).status_code == 200
    assert _task(api, start)["status"] == "cancelled"
    assert _status(api, vm["name"])["runtime"] is None


def test_power_tasks_cannot_be_cancelled_by_users(api, px):
    node, vm, _ = _ready_vm(api, px)
    start = _accepted(_power(api, vm["name"], "start"))
    with api.client("admin") as c:
        error_of(c.post(f"/v1/tasks/{start}/cancel"), 409, "conflict")
    assert [t["id"] for t in desired_tasks(api, node)] == [start]


# 8. vm.create carries the start ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "start", "power_state", "policy"),
    [
        ({}, True, "running", "on-failure"),
        ({"power_state": "running", "restart_policy": "never"}, True, "running", "never"),
        ({"power_state": "stopped"}, False, "stopped", "on-failure"),
    ],
)
def test_vm_create_args_carry_the_start(api, px, fields, start, power_state, policy):
    node = node_with_pool(api, f"{px}-a", f"{px}-p")
    vm = create_vm(api, f"{px}-1", pool=f"{px}-p", vcpus=3, memory_mb=1024, **fields)
    assert (vm["power_state"], vm["restart_policy"]) == (power_state, policy)
    [task] = desired_tasks(api, node)
    assert task["type"] == "vm.create"
    args = task["args"]
    assert args["start"] is start
    assert (args["name"], args["vcpus"], args["memory_mb"], args["restart_policy"]) == (
        f"{px}-1",
        3,
        1024,
        policy,
    )


def test_bad_power_fields_at_create_are_400(api, px):
    with api.client("developer") as c:
        for field, value in (("power_state", "paused"), ("restart_policy", "sometimes")):
            body = {
                "name": f"{px}-1",
                "image_url": "https://images.example.test/a.img",
                "arch": "amd64",
                "vcpus": 1,
                "memory_mb": 512,
                field: value,
            }
            error_of(c.post("/v1/vms", json=body), 400, "validation_failed")


def test_vm_create_success_stores_the_start_it_made(api, px):
    node = node_with_pool(api, f"{px}-a", f"{px}-p")
    vm = create_vm(api, f"{px}-1", pool=f"{px}-p")
    [task] = desired_tasks(api, node)
    power = {"id": vm["id"], "state": "running", "pid": 321, "accelerator": "tcg"}
    result = {**create_result(vm, task["args"]["pool_path"]), "power": power}
    assert agent_report(api, node, task["id"], "success", result=result).status_code == 200
    status = _status(api, vm["name"])
    assert (status["phase"], status["state"], status["runtime"]["pid"]) == (
        "stopped",
        "running",
        321,
    )

    # a malformed power observation is ignored: the disk is recorded all the same
    vm2 = create_vm(api, f"{px}-2", pool=f"{px}-p")
    [task2] = desired_tasks(api, node)
    bad = {**create_result(vm2, task2["args"]["pool_path"]), "power": {"state": "exploded"}}
    assert agent_report(api, node, task2["id"], "success", result=bad).status_code == 200
    status = _status(api, vm2["name"])
    assert (status["phase"], status["state"], status["runtime"]) == ("stopped", "stopped", None)


# on each backend -------------------------------------------------------------------------------


def test_power_and_runtime_round_trip_on_each_backend(api_any_backend):
    api = api_any_backend
    node, vm, _ = _ready_vm(api, "rt", power_state="stopped")
    name = vm["name"]
    start = _accepted(_power(api, name, "start", timeout_seconds=5))
    assert _accepted(_power(api, name, "start")) == start
    error_of(_power(api, name, "poweroff"), 409, "conflict")
    obs = {"id": vm["id"], "state": "running", "pid": 11, "started_at": _iso(datetime.now(UTC))}
    assert agent_report(api, node, start, "success", result=obs).status_code == 200
    assert _status(api, name)["runtime"]["pid"] == 11
    # the heartbeat replaces the row the task result wrote, then removes it
    _ok_beat(api, node, [{**obs, "pid": 12, "restarts": 1}])
    status = _status(api, name)
    assert (status["state"], status["runtime"]["pid"], status["runtime"]["restarts"]) == (
        "running",
        12,
        1,
    )
    with api.client("developer") as c:
        error_of(c.delete(f"/v1/vms/{name}"), 409, "vm_running")
    _ok_beat(api, node, [])
    assert (_status(api, name)["state"], _status(api, name)["runtime"]) == ("stopped", None)
    _ok_beat(api, node, [obs])
    with api.client("developer") as c:
        delete = _accepted(c.delete(f"/v1/vms/{name}", params={"force": "true"}))
    assert agent_report(api, node, delete, "success").status_code == 200
    assert get(api, f"/v1/vms/{name}").status_code == 404


def _together(*calls: Any) -> list[Any]:
    """Run ``calls`` at once (one thread each, released together); their answers in order."""
    gate = threading.Barrier(len(calls))
    answers: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        gate.wait()
        answers[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return answers


def _race_verbs(api: Any, name: str, verbs: tuple[str, ...]) -> list[int]:
    """The verbs posted at once; their status codes, sorted."""
    calls = [partial(_power, api, name, verb) for verb in verbs]
    return sorted(r.status_code for r in _together(*calls))


@pytest.mark.parametrize(
    ("verbs", "expected"),
    [(("start", "stop"), [202, 409]), (("start", "start"), [202, 202])],
    ids=["two-verbs", "same-verb"],
)
def test_concurrent_verbs_make_one_power_task_on_each_backend(api_any_backend, verbs, expected):
    """Verbs at once on one VM: one vm.<verb> task; a different verb is 409, the same
    verb answers that task. Never two power tasks for one VM."""
    api = api_any_backend
    node, vm, _ = _ready_vm(api, "race")
    for _round in range(ROUNDS):
        codes = _race_verbs(api, vm["name"], verbs)
        tasks = desired_tasks(api, node)
        assert len(tasks) == 1, (_round, codes, tasks)
        assert codes == expected, (_round, codes, tasks)
        assert get_vm(api, vm["name"])["status"]["task_id"] == tasks[0]["id"]
        assert agent_report(api, node, tasks[0]["id"], "success").status_code == 200


def test_a_power_outcome_racing_a_heartbeat_is_taken_on_each_backend(api_any_backend):
    """The agent reports a start's outcome while its heartbeat carries the same VM (no
    runtime row yet): both are accepted, the task finishes, the VM reads running."""
    api = api_any_backend
    node, vm, _ = _ready_vm(api, "ins")
    obs = {"id": vm["id"], "state": "running", "pid": 9}
    for round_ in range(ROUNDS // 2):
        _ok_beat(api, node, [])  # the agent knows no VM: no runtime row
        assert _status(api, vm["name"])["runtime"] is None
        task_id = _accepted(_power(api, vm["name"], "start" if round_ % 2 == 0 else "restart"))
        beat, outcome = _together(
            partial(_beat, api, node, [obs]),
            partial(agent_report, api, node, task_id, "success", result=obs),
        )
        answers = {"heartbeat": beat.status_code, "task": outcome.status_code}
        assert answers == {"heartbeat": 200, "task": 200}, (round_, beat.text, outcome.text)
        assert _task(api, task_id)["status"] == "success"
        assert _status(api, vm["name"])["state"] == "running"

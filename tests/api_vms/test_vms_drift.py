"""Drift on the API (issue 16), against the real server with the agent's side played:
the drift report stored from heartbeats and shown by ``GET .../drift`` (with missing
disks joined to their VMs, and orphans of a VM the control plane knows hidden), the
purge task (who may ask, which paths), and ``POST /v1/vms/import`` (its refusals, the
``vm.import`` task and both of its outcomes)."""

from __future__ import annotations

from typing import Any

from test_vms_helpers import (
    add_pool,
    agent_report,
    create_result,
    create_vm,
    desired_tasks,
    error_of,
    get,
    get_vm,
    heartbeat,
    place,
    ready_node,
    report,
)

ORPHAN = "vms/5f0c2b6e-0000-4000-8000-000000000001/disk.qcow2"


def item(path: str, kind: str = "orphan", area: str = "vms", **fields: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "area": area,
        "path": path,
        "type": "file",
        "size_bytes": 4096,
        "modified_at": "2026-12-04T10:00:00Z",
        **fields,
    }


def drift(*items: dict[str, Any], more: int = 0) -> dict[str, Any]:
    return {"items": list(items), "more": more}


def post(api: Any, path: str, body: dict[str, Any] | None = None, role: str = "admin"):
    with api.client(role) as c:
        return c.post(path, json=body)


def setup(api: Any, name: str = "node-a", pool: str = "fast"):
    node = ready_node(api, name)
    p = add_pool(api, node, pool)
    return node, p


def test_the_drift_report_is_shown_with_actions_and_missing_disks(api) -> None:
    node, pool = setup(api)
    url = f"/v1/storage-pools/{pool['id']}/drift"
    assert get(api, url).json()["reported"] is False
    vm = create_vm(api, "web-1", pool=pool["id"])
    place(api)
    [task] = [t for t in desired_tasks(api, node) if t["type"] == "vm.create"]
    assert agent_report(api, node, task["id"], "success",
                        result=create_result(vm, pool["path"])).status_code == 200  # fmt: skip
    disk = get_vm(api, "web-1")["disks"][0]
    known = f"vms/{vm['id']}/disk.raw"  # under a VM the control plane knows: owned
    stray = item("scratch/left.tmp", "stray", "scratch")
    heartbeat(api, node, report("fast", missing_disks=[disk["id"]],
                                drift=drift(item(ORPHAN), item(known), stray, more=3)))  # fmt: skip
    view = get(api, url, role="operator").json()
    assert view["reported"] is True
    assert view["more"] == 3
    by_path = {i["path"]: i for i in view["items"]}
    assert set(by_path) == {ORPHAN, "scratch/left.tmp", f"vms/{vm['id']}/disk.qcow2"}
    missing = by_path[f"vms/{vm['id']}/disk.qcow2"]
    assert (missing["kind"], missing["vm"]) == ("missing", "web-1")
    assert missing["action"] == "restore the file, or delete the VM: otherix vm delete web-1"
    orphan = by_path[ORPHAN]
    assert orphan["importable"] is True
    assert orphan["size_bytes"] == 4096
    assert orphan["age_seconds"] >= 0
    assert orphan["action"] == (
        f"otherix vm import NAME --pool fast --node node-a --disk {ORPHAN}, or "
        "otherix pool doctor fast --node node-a --purge"
    )
    assert by_path["scratch/left.tmp"]["action"] == "otherix pool doctor fast --node node-a --purge"
    # a report without drift (an older agent) keeps what was stored
    heartbeat(api, node, report("fast"))
    assert len(get(api, url).json()["items"]) == 3
    # host paths: admin and operator only
    with api.client("developer") as c:
        assert c.get(url).status_code in (403, 404)


def test_a_purge_names_only_reported_paths_and_is_for_admins(api) -> None:
    node, pool = setup(api)
    base = f"/v1/storage-pools/{pool['id']}/drift/purge"
    heartbeat(api, node, report("fast", drift=drift(item(ORPHAN))))
    error_of(post(api, base, {"paths": [ORPHAN]}, role="operator"), 403, "permission_denied")
    r = post(api, base, {"paths": [ORPHAN, "vms/other/disk.raw"]})
    body = error_of(r, 409, "disk_not_orphan")
    assert body["details"]["paths"] == ["vms/other/disk.raw"]
    r = post(api, base, {"paths": [ORPHAN]})
    assert r.status_code == 202, r.text
    [task] = [t for t in desired_tasks(api, node) if t["id"] == r.json()["task_id"]]
    assert task["type"] == "storage_pool.drift_purge"
    assert task["args"] == {"pool": "fast", "path": pool["path"], "paths": [ORPHAN]}
    result = {"removed": [{"path": ORPHAN, "size_bytes": 4096}], "kept": [], "bytes": 4096}
    assert agent_report(api, node, task["id"], "success", result=result).status_code == 200
    assert get(api, f"/v1/tasks/{task['id']}").json()["result"] == result
    heartbeat(api, node, report("fast", status="failed"))
    error_of(post(api, base, {"paths": [ORPHAN]}), 409, "pool_not_ready")


def imported(api: Any, name: str, disk: str, **extra: Any):
    body = {"name": name, "pool": "fast", "node": "node-a", "disk": disk, **extra}
    return post(api, "/v1/vms/import", body)


def test_import_refusals_say_why_and_create_nothing(api) -> None:
    node, pool = setup(api)
    heartbeat(api, node, report("fast", drift=drift(item(ORPHAN))))
    create_vm(api, "taken", pool=pool["id"])
    error_of(imported(api, "x", "/etc/passwd"), 409, "disk_not_orphan")
    error_of(imported(api, "x", "images/debian.qcow2"), 409, "disk_not_orphan")
    error_of(imported(api, "x", "vms/never/disk.raw"), 409, "disk_not_orphan")
    error_of(imported(api, "x", "vms/../images/x"), 400, "validation_failed")
    error_of(imported(api, "taken", ORPHAN), 409, "vm_name_in_use")
    r = post(api, "/v1/vms/import", {"name": "x", "pool": "nope", "node": "node-a", "disk": ORPHAN})
    error_of(r, 404, "not_found")
    r = post(api, "/v1/vms/import", {"name": "x", "pool": "fast", "disk": ORPHAN},
             role="operator")  # fmt: skip
    error_of(r, 403, "permission_denied")
    with api.client("admin") as c:
        assert c.post(f"/v1/storage-pools/{pool['id']}/cordon").status_code == 200
    error_of(imported(api, "x", ORPHAN), 409, "pool_cordoned")
    with api.client("admin") as c:
        assert c.get("/v1/vms/x").status_code == 404


def test_import_creates_a_vm_whose_task_outcome_decides_its_phase(api) -> None:
    node, pool = setup(api)
    raw = "vms/5f0c2b6e-0000-4000-8000-000000000002/disk.raw"
    heartbeat(api, node, report("fast", drift=drift(item(ORPHAN), item(raw))))
    # by its absolute path on the node, as well as relative to the pool root
    r = imported(api, "adopted", f"{pool['path']}/{ORPHAN}", vcpus=2, memory_mb=2048)
    assert r.status_code == 201, r.text
    vm = r.json()
    assert (vm["status"]["phase"], vm["node"], vm["pool"]) == ("creating", "node-a", "fast")
    assert vm["power_state"] == "stopped"
    error_of(imported(api, "twice", ORPHAN), 409, "disk_not_orphan")  # one import at a time
    [task] = [t for t in desired_tasks(api, node) if t["type"] == "vm.import"]
    assert task["args"] == {"vm_id": vm["id"], "pool": "fast", "path": pool["path"],
                            "source": ORPHAN}  # fmt: skip
    file_path = f"{pool['path']}/vms/{vm['id']}/disk.raw"
    result = {"vm_id": vm["id"], "format": "raw", "virtual_size_bytes": 1 << 20,
              "disk_size_bytes": 4096, "file_path": file_path}  # fmt: skip
    assert agent_report(api, node, task["id"], "success", result=result).status_code == 200
    done = get_vm(api, "adopted")
    assert (done["status"]["phase"], done["format"]) == ("stopped", "raw")
    [disk] = done["disks"]
    assert (disk["file_path"], disk["format"], disk["virtual_size_bytes"]) == (
        file_path, "raw", 1 << 20,
    )  # fmt: skip
    # a failed import leaves the VM in error, for vm delete to remove
    r = imported(api, "broken", raw)
    assert r.status_code == 201, r.text
    [task] = [t for t in desired_tasks(api, node) if t["args"].get("source") == raw]
    failure = {"code": "disk_backing_outside_pool", "message": "backed by /srv/base.qcow2"}
    assert agent_report(api, node, task["id"], "failed", error=failure).status_code == 200
    broken = get_vm(api, "broken")
    assert (broken["status"]["phase"], broken["status"]["reason"]) == (
        "error", "disk_backing_outside_pool",
    )  # fmt: skip
    with api.client("admin") as c:
        assert c.delete("/v1/vms/broken").status_code == 202

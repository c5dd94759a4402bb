"""A pool instance's image cache on the API (``services.cache``): the entries its agent
reported with the VMs made from each, pins, prune, the ``config.cache`` rules, and the
agent's evictions as node events (each once)."""

from __future__ import annotations

from typing import Any

from test_vms_helpers import (
    SHA,
    add_pool,
    agent_report,
    create_result,
    create_vm,
    desired_tasks,
    error_of,
    get,
    heartbeat,
    ready_node,
    report,
)

from support.factories import heartbeat_body

OTHER = "cd" * 32


def image(name: str, sha: str = SHA, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "sha256": sha,
        "size_bytes": 1000,
        "virtual_size_bytes": 4000,
        "format": "qcow2",
        "imported_at": "2026-12-01T10:00:00Z",
        **extra,
    }


def eviction(name: str, sha: str = OTHER, when: str = "2026-12-03T10:00:00Z") -> dict[str, Any]:
    return {
        "image": name,
        "sha256": sha,
        "size_bytes": 1000,
        "reason": "max_bytes",
        "last_used_at": "2026-12-01T10:00:00Z",
        "evicted_at": when,
    }


def world(api: Any, px: str) -> tuple[Any, dict[str, Any]]:
    node = ready_node(api, f"{px}-a")
    pool = add_pool(api, node, f"{px}-p")
    images = [
        image("used.img", last_used_at="2026-12-02T10:00:00Z"),
        image("other.img", sha=OTHER),
    ]
    heartbeat(api, node, report(f"{px}-p", images=images))
    return node, pool


def made_vm(api: Any, px: str, node: Any, pool: dict[str, Any]) -> dict[str, Any]:
    vm = create_vm(api, f"{px}-vm", pool=pool["name"], image_sha256=SHA, power_state="stopped")
    [task] = [t for t in desired_tasks(api, node) if t["type"] == "vm.create"]
    agent_report(api, node, task["id"], "success", result=create_result(vm, pool["path"]))
    return vm


def test_the_cache_view_shows_entries_pins_and_the_vms_made_from_each(api, px) -> None:
    node, pool = world(api, px)
    vm = made_vm(api, px, node, pool)
    view = get(api, f"/v1/storage-pools/{pool['id']}/cache", role="viewer").json()
    assert (view["pool"], view["node"]) == (pool["name"], node.name)
    assert view["policy"] == {
        "max_bytes": None,
        "min_free_percent": 10.0,
        "min_age_seconds": 3600.0,
        "pinned": [],
    }
    by_name = {i["name"]: i for i in view["images"]}
    assert by_name["used.img"]["vms"] == [vm["name"]]
    assert by_name["used.img"]["last_used_at"] == "2026-12-02T10:00:00Z"
    assert by_name["other.img"]["vms"] == []
    assert not any(i["pinned"] for i in view["images"])
    # the desired state tells the agent which image each disk came from
    with api.client(None) as c:
        r = c.get(
            f"/v1/nodes/{node.name}/watch",
            params={"revision": 0, "timeout": 0},
            headers=node.auth,
        )
    assert r.status_code == 200, r.text
    disks = [d for p in r.json()["desired"]["declared_pools"] for d in p["disks"]]
    assert [d["image_sha256"] for d in disks] == [SHA]


def test_pin_and_unpin_change_the_pools_config_and_a_pin_needs_the_image(api, px) -> None:
    _node, pool = world(api, px)
    with api.client("admin") as c:
        r = c.put(f"/v1/storage-pools/{pool['id']}/cache/pins/other.img")
        assert r.status_code == 200, r.text
        assert [i["name"] for i in r.json()["images"] if i["pinned"]] == ["other.img"]
        body = c.get(f"/v1/storage-pools/{pool['id']}").json()
        assert body["config"]["cache"] == {"pinned": ["other.img"]}
        again = c.put(f"/v1/storage-pools/{pool['id']}/cache/pins/other.img")
        assert again.json()["policy"]["pinned"] == ["other.img"]  # idempotent
        missing = c.put(f"/v1/storage-pools/{pool['id']}/cache/pins/nothere.img")
        error = error_of(missing, 404, "not_found")
        assert "nothere.img" in error["message"]
        assert "is not in the cache" in error["message"]
        r = c.delete(f"/v1/storage-pools/{pool['id']}/cache/pins/other.img")
        assert r.status_code == 200, r.text
        assert "cache" not in c.get(f"/v1/storage-pools/{pool['id']}").json()["config"]
        r = c.delete(f"/v1/storage-pools/{pool['id']}/cache/pins/other.img")
        assert r.status_code == 200  # unpinning what is not pinned changes nothing
    with api.client("operator") as c:
        r = c.put(f"/v1/storage-pools/{pool['id']}/cache/pins/other.img")
        assert r.status_code == 403


def test_prune_is_a_task_for_the_node_and_dry_run_says_so(api, px) -> None:
    node, pool = world(api, px)
    with api.client("admin") as c:
        r = c.post(f"/v1/storage-pools/{pool['id']}/cache/prune", params={"dry_run": "true"})
    assert r.status_code == 202, r.text
    [task] = [t for t in desired_tasks(api, node) if t["id"] == r.json()["task_id"]]
    assert task["type"] == "storage_pool.cache_prune"
    assert task["args"] == {"pool": pool["name"], "path": pool["path"], "dry_run": True}
    done = {"evicted": [eviction("other.img")], "dry_run": True, "bytes": 1000}
    assert agent_report(api, node, task["id"], "success", result=done).status_code == 200
    body = get(api, f"/v1/tasks/{task['id']}").json()
    assert (body["status"], body["result"]) == ("success", done)
    with api.client("operator") as c:
        assert c.post(f"/v1/storage-pools/{pool['id']}/cache/prune").status_code == 403


def test_a_bad_cache_config_is_refused_naming_the_field(api, px) -> None:
    node = ready_node(api, f"{px}-a")
    prefix = f"{api.server.settings.data_dir}/pools/"
    with api.client("admin") as c:
        r = c.post(
            "/v1/storage-pools",
            json={
                "node": node.name,
                "name": f"{px}-p",
                "path": f"{prefix}{px}",
                "config": {"cache": {"max_bytes": "lots"}},
            },
        )
        error = error_of(r, 400, "validation_failed")
        assert error["details"]["field"] == "config.cache.max_bytes"
        pool = add_pool(api, node, f"{px}-q")
        r = c.patch(
            f"/v1/storage-pools/{pool['id']}", json={"config": {"cache": {"min_age": "soon"}}}
        )
        assert error_of(r, 400, "validation_failed")["details"]["field"] == "config.cache.min_age"
        ok = c.patch(
            f"/v1/storage-pools/{pool['id']}",
            json={"config": {"cache": {"max_bytes": 10**9, "min_age": "10m"}}},
        )
        assert ok.status_code == 200, ok.text


def test_each_eviction_the_agent_reports_is_one_node_event(api, px) -> None:
    node, pool = world(api, px)
    first = [eviction("other.img"), eviction("old.img", when="2026-12-03T10:05:00Z")]
    heartbeat(api, node, report(pool["name"], images=[image("used.img")], evictions=first))
    # the agent repeats its recent evictions in every full report: no second event
    heartbeat(api, node, report(pool["name"], images=[image("used.img")], evictions=first))
    events = get(api, f"/v1/nodes/{node.name}").json()["events"]
    evicted = [e for e in events if e["reason"] == "image_evicted"]
    assert sorted(e["details"]["image"] for e in evicted) == ["old.img", "other.img"]
    one = next(e for e in evicted if e["details"]["image"] == "other.img")
    assert one["details"]["reason"] == "max_bytes"
    assert one["details"]["pool_id"] == pool["id"]
    assert "cache.max_bytes" in one["message"]
    # a malformed eviction is a 400, never a 500
    bad = report(pool["name"], evictions=[{**eviction("x.img"), "reason": "whim"}])
    with api.client(None) as c:
        r = c.post(
            f"/v1/nodes/{node.name}/heartbeat",
            json=heartbeat_body([bad], digest="1" * 64),
            headers=node.auth,
        )
    assert r.status_code == 400, r.text

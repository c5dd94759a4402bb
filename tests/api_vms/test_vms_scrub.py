"""A pool instance's cache scrub on the API: the ``storage_pool.scrub`` task (who may ask,
its args, progress and result), the agent's ``scrub`` report on the instance view, each
quarantined entry as one ``image_quarantined`` node event, and the ``config.scrub``
rules (a 400 naming the key)."""

from __future__ import annotations

from typing import Any

import pytest
from test_vms_helpers import (
    add_pool,
    agent_report,
    desired_tasks,
    error_of,
    get,
    heartbeat,
    ready_node,
    report,
)

SHA = "ab" * 32
BAD = "cd" * 32


def quarantined(name: str, when: str = "2026-12-03T10:00:00Z") -> dict[str, Any]:
    return {
        "image": name,
        "sha256_expected": SHA,
        "sha256_found": BAD,
        "quarantined_at": when,
        "path": f"quarantine/{name}.20261203T100000Z",
    }


def scrub(*entries: dict[str, Any], running: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "last_completed_at": "2026-12-03T10:01:00Z",
        "bytes_per_second": 1048576.0,
        "quarantined": list(entries),
        "running": running,
    }


def test_scrub_is_a_task_for_the_node_with_progress_and_a_result(api_any_backend) -> None:
    api = api_any_backend
    node = ready_node(api, "node-a")
    pool = add_pool(api, node, "fast")
    with api.client("operator") as c:  # guarded like a scan: admin and operator
        r = c.post(f"/v1/storage-pools/{pool['id']}/scrub")
    assert r.status_code == 202, r.text
    [task] = [t for t in desired_tasks(api, node) if t["id"] == r.json()["task_id"]]
    assert task["type"] == "storage_pool.scrub"
    assert task["args"] == {"pool": pool["name"], "path": pool["path"]}
    progress = {"bytes_done": 10, "bytes_total": 40}
    r = agent_report(api, node, task["id"], "running", progress=25, result=progress)
    assert r.status_code == 200, r.text
    body = get(api, f"/v1/tasks/{task['id']}").json()
    assert (body["status"], body["progress"]) == ("running", 25)
    done = {"entries": 2, "bytes": 40, "quarantined": [quarantined("bad.img")]}
    assert agent_report(api, node, task["id"], "success", result=done).status_code == 200
    body = get(api, f"/v1/tasks/{task['id']}").json()
    assert (body["status"], body["result"]) == ("success", done)
    with api.client("viewer") as c:
        assert c.post(f"/v1/storage-pools/{pool['id']}/scrub").status_code in (403, 404)


def test_the_scrub_report_shows_on_the_view_and_each_quarantine_is_one_event(
    api_any_backend,
) -> None:
    api = api_any_backend
    node = ready_node(api, "node-a")
    pool = add_pool(api, node, "fast")
    assert get(api, f"/v1/storage-pools/{pool['id']}").json()["scrub"] is None
    running = {"bytes_done": 5, "bytes_total": 9}
    heartbeat(api, node, report("fast", scrub=scrub(running=running)))
    view = get(api, f"/v1/storage-pools/{pool['id']}").json()["scrub"]
    assert view["running"] == running
    assert view["quarantined"] == []
    first = scrub(quarantined("bad.img"))
    heartbeat(api, node, report("fast", scrub=first))
    heartbeat(api, node, report("fast", scrub=first))  # reported again: no second event
    two = scrub(quarantined("bad.img"), quarantined("worse.img", "2026-12-03T11:00:00Z"))
    heartbeat(api, node, report("fast", scrub=two))
    view = get(api, f"/v1/storage-pools/{pool['id']}").json()["scrub"]
    assert [q["image"] for q in view["quarantined"]] == ["bad.img", "worse.img"]
    assert view["quarantined"][0]["sha256_found"] == BAD
    assert view["last_completed_at"] == "2026-12-03T10:01:00Z"
    assert view["running"] is None
    events = get(api, f"/v1/nodes/{node.name}").json()["events"]
    found = [e for e in events if e["reason"] == "image_quarantined"]
    assert sorted(e["details"]["image"] for e in found) == ["bad.img", "worse.img"]
    one = next(e for e in found if e["details"]["image"] == "bad.img")
    assert one["type"] == "warning"
    assert one["details"]["pool_id"] == pool["id"]
    assert "quarantine/bad.img" in one["message"]
    # a report without scrub (an older agent) keeps what was stored
    heartbeat(api, node, report("fast"))
    assert len(get(api, f"/v1/storage-pools/{pool['id']}").json()["scrub"]["quarantined"]) == 2


@pytest.mark.parametrize(
    ("scrub_config", "field"),
    [
        ({"interval": "soon"}, "config.scrub.interval"),
        ({"max_bytes_per_second": 0}, "config.scrub.max_bytes_per_second"),
        ({"often": True}, "config.scrub.often"),
    ],
)
def test_a_bad_scrub_config_is_refused_naming_the_key(api, scrub_config, field) -> None:
    node = ready_node(api, "node-a")
    prefix = f"{api.server.settings.data_dir}/pools/"
    with api.client("admin") as c:
        r = c.post(
            "/v1/storage-pools",
            json={
                "node": node.name,
                "name": "fast",
                "path": f"{prefix}fast",
                "config": {"scrub": scrub_config},
            },
        )
        assert error_of(r, 400, "validation_failed")["details"]["field"] == field
        pool = add_pool(api, node, "slow")
        r = c.patch(f"/v1/storage-pools/{pool['id']}", json={"config": {"scrub": scrub_config}})
        assert error_of(r, 400, "validation_failed")["details"]["field"] == field
        ok = c.patch(
            f"/v1/storage-pools/{pool['id']}",
            json={"config": {"scrub": {"interval": "1d", "max_bytes_per_second": 1 << 20}}},
        )
        assert ok.status_code == 200, ok.text


def test_a_scrub_can_be_cancelled_pending_or_running_and_leaves_the_node(api) -> None:
    node = ready_node(api, "node-a")
    pool = add_pool(api, node, "fast")
    for started in (False, True):
        with api.client("operator") as c:
            task_id = c.post(f"/v1/storage-pools/{pool['id']}/scrub").json()["task_id"]
        if started:
            progress = {"bytes_done": 1, "bytes_total": 4}
            assert agent_report(api, node, task_id, "running", result=progress).status_code == 200
        with api.client("operator") as c:
            r = c.post(f"/v1/tasks/{task_id}/cancel")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "cancelled"
        assert task_id not in {t["id"] for t in desired_tasks(api, node)}
        # the agent's late report changes nothing
        agent_report(api, node, task_id, "success", result={"entries": 0, "bytes": 0})
        assert get(api, f"/v1/tasks/{task_id}").json()["status"] == "cancelled"


def test_quarantine_clear_is_an_admin_task_naming_the_images(api) -> None:
    node = ready_node(api, "node-a")
    pool = add_pool(api, node, "fast")
    url = f"/v1/storage-pools/{pool['id']}/cache/quarantine/clear"
    with api.client("admin") as c:
        some = c.post(url, params={"image": ["b.img", "a.img", "a.img"]})
        every = c.post(url)
        bad = c.post(url, params={"image": ["../x"]})
    assert some.status_code == 202, some.text
    assert every.status_code == 202, every.text
    assert error_of(bad, 400, "validation_failed")["details"]["field"] == "image"
    tasks = {t["id"]: t for t in desired_tasks(api, node)}
    one, two = tasks[some.json()["task_id"]], tasks[every.json()["task_id"]]
    assert one["type"] == two["type"] == "storage_pool.quarantine_clear"
    assert one["args"]["images"] == ["a.img", "b.img"]
    assert two["args"]["images"] is None
    cleared = {"cleared": [quarantined("a.img")]}
    assert agent_report(api, node, one["id"], "success", result=cleared).status_code == 200
    assert get(api, f"/v1/tasks/{one['id']}").json()["result"] == cleared
    with api.client("operator") as c:
        assert c.post(url).status_code in (403, 404)

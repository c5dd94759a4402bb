"""Capacity in parts (issue 16) through the API, with a played agent: a pool
report's ``usage`` is stored and shown on the instance view (with ``other_bytes``
and ``overcommit_ratio``), summed on the name view, listed, kept when a report
carries none, and exposed as gauges per pool and node on ``/metrics``."""

from __future__ import annotations

import re

from apihelpers import create_pool, get_pool, heartbeat, list_all, pool_report, ready_node

from support.factories import http

GiB = 1 << 30
USAGE_A = {
    "vm_disk_bytes": 10 * GiB,
    "vm_provisioned_bytes": 150 * GiB,
    "image_cache_bytes": 2 * GiB,
    "scratch_bytes": GiB,
}
USAGE_B = {
    "vm_disk_bytes": 5 * GiB,
    "vm_provisioned_bytes": 50 * GiB,
    "image_cache_bytes": GiB,
    "scratch_bytes": 0,
}


def report(usage=None, capacity=100 * GiB, available=60 * GiB):
    extra = {} if usage is None else {"usage": usage}
    return pool_report("fast", capacity=capacity, available=available, **extra)


def test_usage_on_the_instance_name_and_list_views(api_any_backend):
    api = api_any_backend
    a, b = ready_node(api, "node-a"), ready_node(api, "node-b")
    pa = create_pool(api, a, "fast")
    create_pool(api, b, "fast")
    assert get_pool(api, pa["id"]).json()["usage"] is None  # not measured yet

    assert heartbeat(api, a, [report(USAGE_A)]).status_code == 200
    assert heartbeat(api, b, [report(USAGE_B, available=80 * GiB)]).status_code == 200

    one = get_pool(api, pa["id"]).json()
    assert one["usage"] == {
        **USAGE_A,
        "other_bytes": (100 - 60 - 13) * GiB,
        "overcommit_ratio": 1.5,
    }
    concept = get_pool(api, "fast").json()
    assert concept["capacity_bytes"] == 200 * GiB
    assert concept["available_bytes"] == 140 * GiB
    assert concept["usage"] == {
        "vm_disk_bytes": 15 * GiB,
        "vm_provisioned_bytes": 200 * GiB,
        "image_cache_bytes": 3 * GiB,
        "scratch_bytes": GiB,
        "other_bytes": 27 * GiB + 14 * GiB,
        "overcommit_ratio": 1.0,
    }
    listed = {p["node"]: p["usage"] for p in list_all(api)}
    assert listed["node-a"]["vm_disk_bytes"] == 10 * GiB
    assert listed["node-b"]["overcommit_ratio"] == 0.5


def test_a_report_without_usage_keeps_the_stored_one(api_any_backend):
    api = api_any_backend
    a = ready_node(api, "node-a")
    pool = create_pool(api, a, "fast")
    heartbeat(api, a, [report(USAGE_A)])
    heartbeat(api, a, [report(None, available=50 * GiB)])  # an older agent, or a failed pass
    body = get_pool(api, pool["id"]).json()
    assert body["available_bytes"] == 50 * GiB
    assert body["usage"]["vm_disk_bytes"] == 10 * GiB
    assert body["usage"]["other_bytes"] == (100 - 50 - 13) * GiB
    heartbeat(api, a, [report({**USAGE_A, "vm_disk_bytes": 11 * GiB})])
    assert get_pool(api, pool["id"]).json()["usage"]["vm_disk_bytes"] == 11 * GiB


def test_a_bad_usage_is_refused(api):
    a = ready_node(api, "node-a")
    create_pool(api, a, "fast")
    r = heartbeat(api, a, [report({**USAGE_A, "scratch_bytes": -1})])
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "validation_failed"


def _gauges(text: str) -> dict[tuple[str, str, str], float]:
    found: dict[tuple[str, str, str], float] = {}
    pattern = r'^otherix_pool_(\w+)\{node="([^"]*)",pool="([^"]*)"\} (\S+)$'
    for name, node, pool, value in re.findall(pattern, text, re.MULTILINE):
        found[(name, node, pool)] = float(value)
    return found


def test_metrics_show_gauges_per_pool_and_node(api_any_backend):
    api = api_any_backend
    a, b = ready_node(api, "node-a"), ready_node(api, "node-b")
    create_pool(api, a, "fast")
    create_pool(api, b, "fast")
    heartbeat(api, a, [report(USAGE_A)])
    with http(api) as c:
        text = c.get("/metrics").text
    gauges = _gauges(text)
    assert gauges[("capacity_bytes", "node-a", "fast")] == 100 * GiB
    assert gauges[("available_bytes", "node-a", "fast")] == 60 * GiB
    assert gauges[("vm_disk_bytes", "node-a", "fast")] == 10 * GiB
    assert gauges[("provisioned_bytes", "node-a", "fast")] == 150 * GiB
    assert gauges[("cache_bytes", "node-a", "fast")] == 2 * GiB
    assert gauges[("scratch_bytes", "node-a", "fast")] == GiB
    assert gauges[("pressure", "node-a", "fast")] == 0
    # node-b's pool never reported: only its pressure (0), no byte gauges
    assert gauges[("pressure", "node-b", "fast")] == 0
    assert ("capacity_bytes", "node-b", "fast") not in gauges
    assert "# TYPE otherix_pool_vm_disk_bytes gauge" in text


def test_metrics_show_pressure(api):
    a = ready_node(api, "node-a")
    create_pool(api, a, "fast")
    for _ in range(3):  # the default rule: under 15% free, three reports in a row
        heartbeat(api, a, [report(USAGE_A, available=GiB)])
        heartbeat(api, a, [report(USAGE_A, available=GiB + 1)])
    with http(api) as c:
        gauges = _gauges(c.get("/metrics").text)
    assert gauges[("pressure", "node-a", "fast")] == 1

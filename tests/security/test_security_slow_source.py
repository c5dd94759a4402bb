"""A hostile image source on a live cluster: it must fail its own VMs, never starve others.

One real control plane, one real ``otherix-agent`` (its own mount namespace
as root) with the default task workers (4, at most 2 per image source) and a
short rate-floor window (1 KiB/s over 4 s) so the test runs in seconds. Two
hostile sources (``support.images.ImageOrigin``): one that sends **one byte
a second**, one that **stalls after its headers**. Each gets more VMs than
the node has workers; then another tenant's small VMs from a well-behaved
source are created. Checked, as a user sees it:

- the other tenant's VMs reach ``stopped`` while two downloads of the
  hostile source are still running (no worker starved), and before any
  hostile VM has failed;
- every hostile VM ends in ``error`` with reason ``download_too_slow``; its
  task says so with the rate seen and the window in ``error.details``, after
  one attempt (``attempts: 1``, ``max_attempts: 3``): a too-slow source is
  not retried;
- the hostile source never had more than 2 downloads at once, and nothing
  of them is left in the pool (no cache entry, no scratch file, no VM disk).

Recorded through ``reliability``: hostile VMs (injected) and how many failed
cleanly (survived); other VMs (checked) and how many were starved (lost).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.clustervms import one_node
from support.harness import Cluster, wait_until
from support.images import ImageOrigin

pytestmark = [pytest.mark.security, pytest.mark.slow]

WINDOW = 4.0
AGENT = {
    "images": {
        "allowed_networks": ["127.0.0.1/32"],  # the test's image servers, nothing else
        "min_rate_bytes_per_second": 1024,
        "min_rate_window": WINDOW,
    },
    "tasks": {"retry_delay": 0.2},  # vm_create_workers / vm_create_per_source: defaults
}
POOL = "/var/lib/otherix/pools/tenants"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("slowsrc")
    with one_node(tmp, overrides={"agents.heartbeat_interval": 30}, agent_config=AGENT) as (c, _):
        yield c


def api(cluster: Cluster, method: str, path: str, **kw: Any) -> dict[str, Any]:
    r = cluster.admin.request(method, path, **kw)
    assert r.status_code < 300, r.text
    return dict(r.json())


def create_vm(cluster: Cluster, pool_id: str, name: str, url: str) -> None:
    body = {"name": name, "image_url": url, "arch": "amd64", "vcpus": 1, "memory_mb": 512}
    api(cluster, "POST", "/v1/vms", json={**body, "pool": pool_id, "format": "raw"})


def phase(cluster: Cluster, name: str) -> str:
    return str(api(cluster, "GET", f"/v1/vms/{name}")["status"]["phase"])


@pytest.mark.parametrize("mode", ["one byte a second", "stall after headers"])
def test_a_slow_source_fails_its_own_vms_and_starves_no_one(
    cluster: Cluster, tmp_path: Path, reliability, mode: str
) -> None:
    tag = "drip" if mode.startswith("one") else "stall"
    node = cluster.nodes["node-a"]
    pool = api(
        cluster,
        "POST",
        "/v1/storage-pools",
        json={"name": f"p-{tag}", "node": "node-a", "path": f"{POOL}-{tag}"},
    )
    cluster.wait_pool_status("node-a", f"p-{tag}", "ready", timeout=20)
    root = node.host_path(f"{POOL}-{tag}")
    image = tmp_path / "image.raw"
    image.write_bytes(os.urandom(64 * 1024))
    hostile_kw: dict[str, Any] = {"drip": 1.0} if tag == "drip" else {"stall": True}
    hostile_vms = [f"{tag}-hostile-{i}" for i in range(4)]  # as many as the node's workers
    other_vms = [f"{tag}-tenant-{i}" for i in range(2)]
    with ImageOrigin(image, **hostile_kw) as hostile, ImageOrigin(image) as good:
        for i, name in enumerate(hostile_vms):
            create_vm(cluster, pool["id"], name, hostile.url_for(f"hostile-{i}.raw"))
        wait_until(lambda: hostile.active == 2, 20, "two hostile downloads running")
        for i, name in enumerate(other_vms):
            create_vm(cluster, pool["id"], name, good.url_for(f"tenant-{i}.raw"))
        came_through = 0
        deadline = time.monotonic() + WINDOW * 0.9  # the hostile downloads' first window
        while time.monotonic() < deadline and came_through < len(other_vms):
            came_through = sum(phase(cluster, n) == "stopped" for n in other_vms)
            time.sleep(0.05)
        still_running = hostile.active
        hostile_failed_early = [n for n in hostile_vms if phase(cluster, n) == "error"]
        # ... and the hostile VMs all fail, two at a time (bounded: 3 windows a wave)
        deadline = time.monotonic() + WINDOW * 6
        while time.monotonic() < deadline and not all(
            phase(cluster, n) == "error" for n in hostile_vms
        ):
            time.sleep(0.1)
        most_at_once = hostile.peak
        hits = hostile.hits.total()

    failures: dict[str, Any] = {}
    for i, name in enumerate(hostile_vms):
        vm = api(cluster, "GET", f"/v1/vms/{name}")
        task = api(cluster, "GET", f"/v1/tasks/{vm['status']['task_id']}")
        error = task["error"] or {}
        ok = (
            vm["status"]["reason"] == "download_too_slow"
            and "below the minimum of 1 KiB/s" in vm["status"]["message"]
            and error.get("code") == "download_too_slow"
            and error["details"]["rate_bytes_per_second"] < 1024
            and error["details"]["window_seconds"] >= WINDOW
            and (task["attempts"], task["max_attempts"]) == (1, 3)
            and not (root / "vms" / vm["id"]).exists()
            and not (root / "images" / f"hostile-{i}.raw").exists()
        )
        if not ok:
            failures[name] = (vm["status"], task)
    starved = len(other_vms) - came_through
    reliability.record(
        "slow image source vs other tenants' VMs",
        injected=len(hostile_vms),
        survived=len(hostile_vms) - len(failures),
        checked=len(other_vms),
        lost=starved,
        detail="a 1 B/s source and a source that stalls after its headers, 4 VMs each "
        "on a node with 4 workers (2 per source); floor 1 KiB/s over 4 s; lost = other "
        "tenants' VMs not done while the slow downloads ran",
    )
    assert starved == 0, [(n, phase(cluster, n)) for n in other_vms]
    assert still_running == 2  # the tenant's VMs were done while both slow downloads ran
    assert hostile_failed_early == []
    assert failures == {}  # every hostile VM: download_too_slow, one attempt, nothing left
    assert most_at_once == 2  # never more than vm_create_per_source at once
    assert hits == len(hostile_vms)  # one GET each: download_too_slow is not retried
    assert sorted(p.name for p in (root / "scratch").iterdir()) == []
    assert sorted(p.name for p in (root / "images").iterdir() if "hostile" in p.name) == []

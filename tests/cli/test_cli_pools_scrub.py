"""``otherix pool scrub`` (with and without ``--wait``, against a played agent) and the
``scrub:`` block of ``otherix pool get``, against the real server."""

from __future__ import annotations

from clihelpers import failed, heartbeat, ok, pool_report
from test_cli_vms_helpers import (
    MIB,
    ROOM,
    PacedAgent,
    desired_tasks,
    failure,
    frames,
    ready_node,
    ready_pool,
)

SHA = "ab" * 32
BAD = "cd" * 32
QUARANTINED = {
    "image": "bad.img",
    "sha256_expected": SHA,
    "sha256_found": BAD,
    "quarantined_at": "2026-12-03T10:00:00Z",
    "path": "quarantine/bad.img.20261203T100000Z",
}


def progress(done: int, total: int) -> dict:
    return {
        "status": "running",
        "progress": done * 100 // total,
        "result": {"bytes_done": done, "bytes_total": total},
    }


def test_scrub_without_wait_queues_a_task_for_the_node(cli, api):
    node = ready_node(api, "node-a")
    ready_pool(api, node, "fast")
    out = ok(cli("pool", "scrub", "fast", "--node", "node-a"))
    [task] = [t for t in desired_tasks(api, node) if t["type"] == "storage_pool.scrub"]
    assert out == f"scrub of pool fast on node node-a queued: task {task['id']}\n"
    assert task["args"]["pool"] == "fast"


def test_scrub_wait_shows_bytes_then_prints_what_was_quarantined(cli, api):
    node = ready_node(api, "node-a")
    ready_pool(api, node, "fast")
    done = {"entries": 3, "bytes": 96 * MIB, "quarantined": [QUARANTINED]}
    agent = PacedAgent(
        api,
        node,
        [progress(32 * MIB, 96 * MIB), {"status": "success", "progress": 100, "result": done}],
        task_type="storage_pool.scrub",
    )
    result = cli("pool", "scrub", "fast", "--node", "node-a", "--wait", tty=True,
                 context=agent.context())  # fmt: skip
    agent.join()
    assert ok(result) == (
        f"quarantined bad.img: expected sha256 {SHA}, found {BAD}; moved to "
        "quarantine/bad.img.20261203T100000Z\n"
        "scrubbed 3 image(s), 96.0MiB: 1 quarantined\n"
    )
    assert any("32.0MiB / 96.0MiB" in f for f in frames(result.stderr))


def test_scrub_wait_failure_exits_1_with_the_reason(cli, api):
    node = ready_node(api, "node-a")
    ready_pool(api, node, "fast")
    agent = PacedAgent(
        api, node, [failure("not_found", 'pool "fast" is not ready')],
        task_type="storage_pool.scrub",
    )  # fmt: skip
    result = cli("pool", "scrub", "fast", "--node", "node-a", "--wait", context=agent.context())
    agent.join()
    assert failed(result) == 'Error: pool scrub failed: not_found: pool "fast" is not ready\n'


def test_pool_get_shows_the_scrub_and_its_quarantined_entries(cli, api):
    node = ready_node(api, "node-a")
    pool = ready_pool(api, node, "fast")
    scrub = {
        "last_completed_at": "2026-12-03T10:01:00Z",
        "bytes_per_second": 64.0 * MIB,
        "quarantined": [QUARANTINED],
        "running": {"bytes_done": MIB, "bytes_total": 4 * MIB},
    }
    heartbeat(api, node, [pool_report("default", **ROOM), pool_report("fast", **ROOM,
                                                                       scrub=scrub)])  # fmt: skip
    out = ok(cli("pool", "get", pool["id"]))
    assert (
        "scrub:\n"
        "  last_completed_at: 2026-12-03T10:01:00Z (64.0MiB/s)\n"
        "  running: 1.0MiB of 4.0MiB\n"
        "  quarantined:\n"
        f"    - bad.img: expected {SHA}, found {BAD}, at 2026-12-03T10:00:00Z in "
        "quarantine/bad.img.20261203T100000Z\n"
    ) in out
    concept = ok(cli("pool", "get", "fast"))
    assert "    scrub:\n" in concept
    assert "      quarantined:\n        - bad.img:" in concept

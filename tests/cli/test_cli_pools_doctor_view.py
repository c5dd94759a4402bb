"""``otherix pool doctor`` (the table, ``-o json``, ``--purge`` with and without a
terminal or ``--force``, ``--wait`` against a played agent) and ``otherix vm import``
without ``--wait`` and its refusals, in-process against the real server. The end to end
run with a real agent is ``test_cli_pools_doctor.py`` (slow)."""

from __future__ import annotations

import json

from clihelpers import failed, heartbeat, ok, pool_report
from test_cli_vms_helpers import ROOM, PacedAgent, desired_tasks, ready_node, ready_pool

ORPHAN = "vms/5f0c2b6e-0000-4000-8000-000000000001/disk.qcow2"
DRIFT = {
    "items": [
        {
            "kind": "orphan",
            "area": "vms",
            "path": ORPHAN,
            "type": "file",
            "size_bytes": 4 << 20,
            "modified_at": "2026-12-04T10:00:00Z",
        },
        {
            "kind": "stray",
            "area": "scratch",
            "path": "scratch/left.tmp",
            "type": "file",
            "size_bytes": 15,
            "modified_at": "2026-12-04T09:00:00Z",
        },
    ],
    "more": 0,
}


def with_drift(api, node, drift=DRIFT) -> None:
    heartbeat(api, node, [pool_report("default", **ROOM), pool_report("fast", **ROOM,
                                                                       drift=drift)])  # fmt: skip


def test_doctor_shows_each_item_with_its_size_age_and_action(cli, api):
    node = ready_node(api, "node-a")
    ready_pool(api, node, "fast")
    out = ok(cli("pool", "doctor", "fast", "--node", "node-a"))
    assert out.endswith(": no drift report from its agent yet\n")
    with_drift(api, node)
    out = ok(cli("pool", "doctor", "fast", "--node", "node-a"))
    lines = out.splitlines()
    assert lines[0] == "pool fast on node node-a (/var/lib/otherix/pools/node-a-fast):"
    assert lines[1].split() == ["KIND", "PATH", "SIZE", "AGE", "ACTION"]
    assert lines[2].split()[:3] == ["orphan", ORPHAN, "4.0MiB"]
    assert lines[2].endswith(
        f"otherix vm import NAME --pool fast --node node-a --disk {ORPHAN}, or "
        "otherix pool doctor fast --node node-a --purge"
    )
    assert lines[3].split()[:3] == ["stray", "scratch/left.tmp", "15B"]
    view = json.loads(ok(cli("pool", "doctor", "fast", "--node", "node-a", "-o", "json")))
    assert [i["path"] for i in view["items"]] == [ORPHAN, "scratch/left.tmp"]
    with_drift(api, node, {"items": [], "more": 0})
    out = ok(cli("pool", "doctor", "fast", "--node", "node-a"))
    assert out.endswith(": no drift (nothing orphaned, stray or missing)\n")


def test_purge_needs_a_terminal_or_force_and_names_what_goes(cli, api):
    node = ready_node(api, "node-a")
    ready_pool(api, node, "fast")
    with_drift(api, node)
    err = failed(cli("pool", "doctor", "fast", "--node", "node-a", "--purge"), 2)
    assert "refusing to purge 2 item(s) from pool fast on node node-a" in err
    assert f"  orphan {ORPHAN} (4.0MiB)" in err
    declined = cli("pool", "doctor", "fast", "--node", "node-a", "--purge", tty=True, input="n\n")
    assert "aborted" in failed(declined)
    assert not [t for t in desired_tasks(api, node) if t["type"] == "storage_pool.drift_purge"]
    out = ok(cli("pool", "doctor", "fast", "--node", "node-a", "--purge", "--force"))
    [task] = [t for t in desired_tasks(api, node) if t["type"] == "storage_pool.drift_purge"]
    assert out == f"purge of pool fast on node node-a queued: task {task['id']}\n"
    assert task["args"]["paths"] == [ORPHAN, "scratch/left.tmp"]


def test_purge_wait_prints_what_went_and_what_was_kept(cli, api):
    node = ready_node(api, "node-a")
    ready_pool(api, node, "fast")
    with_drift(api, node)
    result = {
        "removed": [{"path": "scratch/left.tmp", "size_bytes": 15}],
        "kept": [{"path": ORPHAN, "reason": "owned"}],
        "bytes": 15,
    }
    agent = PacedAgent(api, node, [{"status": "success", "progress": 100, "result": result}],
                       task_type="storage_pool.drift_purge")  # fmt: skip
    got = cli("pool", "doctor", "fast", "--node", "node-a", "--purge", "--force", "--wait",
              context=agent.context())  # fmt: skip
    agent.join()
    assert ok(got) == (
        f"removed scratch/left.tmp (15B)\nkept {ORPHAN}: owned\nremoved 1 item(s), 15B\n"
    )


def test_vm_import_queues_the_adoption_or_says_why_not(cli, api):
    node = ready_node(api, "node-a")
    ready_pool(api, node, "fast")
    with_drift(api, node)
    err = failed(cli("vm", "import", "x", "--pool", "fast", "--node", "node-a",
                     "--disk", "images/debian.qcow2"))  # fmt: skip
    assert err == (
        "Error: images/debian.qcow2: only an orphan disk of the pool's vms/ or scratch/ can "
        "be imported\n"
    )
    err = failed(cli("vm", "import", "x", "--pool", "fast", "--node", "node-a",
                     "--disk", ORPHAN, role="operator"))  # fmt: skip
    assert "storage_pool:manage" in err
    out = ok(cli("vm", "import", "rescued", "--pool", "fast", "--node", "node-a",
                 "--disk", ORPHAN))  # fmt: skip
    [task] = [t for t in desired_tasks(api, node) if t["type"] == "vm.import"]
    assert out == f"vm rescued importing {ORPHAN} (task {task['id']})\n"
    assert task["args"]["source"] == ORPHAN

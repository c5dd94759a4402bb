"""``otherix pool reinit`` and what ``pool get`` / ``vm list`` / ``vm get`` show of pool
identity failures, against the real server."""

from __future__ import annotations

import json

from clihelpers import create_pool, failed, get_json, heartbeat, join_node, ok, pool_report, table

from otherix.store.schema import vm_disks, vms
from otherix.store.tx import sql
from support import rows

FAST = "/var/lib/otherix/pools/fast"


def failed_report(api, node, name: str, reason: str = "pool_missing") -> None:
    rep = pool_report(name, "failed", error=f'pool "{name}": gone')
    rep.update(capacity_bytes=None, available_bytes=None, reconciliation_reason=reason)
    heartbeat(api, node, [rep])


def status(api, pool_id: str) -> tuple[str, str | None]:
    _, body = get_json(api, f"/v1/storage-pools/{pool_id}")
    return body["reconciliation_status"], body["reconciliation_reason"]


def stopped_vm_with_made_disk(api, pool_id: str, node_id: str, name: str) -> None:
    """A stopped VM on the node whose root disk on the pool is made (file_path known)."""
    vm_id = rows.add_vm_disk(api.server.deps.db, pool_id, name)
    with api.server.deps.db.write() as conn:
        sql(conn).execute(
            vm_disks.update().where(vm_disks.c.vm_id == vm_id).values(file_path="/p/d")
        )
        sql(conn).execute(vms.update().where(vms.c.id == vm_id).values(node_id=node_id))


def test_reinit_a_failed_pool_with_force(cli, api):
    node = join_node(api, "node-a")
    pool = create_pool(api, "fast", "node-a", FAST)
    failed_report(api, node, "fast")
    out = ok(cli("pool", "reinit", pool["id"], "--force"))
    assert out == (
        f"pool {pool['id']} reinitialised\n"
        "reconciliation_status: pending\n"
        f"watch it with: otherix pool get {pool['id']}\n"
    )
    assert status(api, pool["id"]) == ("pending", None)


def test_reinit_asks_on_a_terminal_and_a_no_changes_nothing(cli, api):
    node = join_node(api, "node-a")
    pool = create_pool(api, "fast", "node-a", FAST)
    failed_report(api, node, "fast", "pool_identity_mismatch")
    result = cli("pool", "reinit", "fast", "--node", "node-a", tty=True, input="n\n")
    assert "reinitialise storage pool fast on node node-a? [y/N]: " in result.stderr
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.endswith(
        "Error: aborted: did not reinitialise storage pool fast on node node-a\n"
    )
    assert status(api, pool["id"]) == ("failed", "pool_identity_mismatch")
    result = cli("pool", "reinit", "fast", "--node", "node-a", tty=True, input="y\n")
    assert ok(result).startswith("pool fast on node node-a reinitialised\n")
    assert status(api, pool["id"]) == ("pending", None)


def test_reinit_json(cli, api):
    node = join_node(api, "node-a")
    pool = create_pool(api, "fast", "node-a", FAST)
    failed_report(api, node, "fast", "pool_device_changed")
    body = json.loads(ok(cli("pool", "reinit", "fast", "-o", "json", "--force")))
    assert body["id"] == pool["id"]
    assert body["reconciliation_status"] == "pending"


def test_reinit_refusals_say_why(cli, api):
    node = join_node(api, "node-a")
    held = create_pool(api, "held", "node-a", FAST + "-held")
    stopped_vm_with_made_disk(api, held["id"], node.id, "web-1")
    ready = create_pool(api, "fine", "node-a", FAST + "-fine")
    failed_report(api, node, "held")
    heartbeat(api, node, [pool_report("fine")])
    assert failed(cli("pool", "reinit", held["id"], "--force")) == (
        f"Error: pool {held['id']} holds 1 VM disk(s) (web-1): mount its disk back "
        "(the pool turns ready by itself), or delete those VMs first\n"
    )
    assert status(api, held["id"]) == ("failed", "pool_missing")
    err = failed(cli("pool", "reinit", "fine", "--force"))
    assert err.startswith("Error: cannot reinitialise pool fine: storage pool is ready; ")
    assert "identity check failed" in err
    assert status(api, ready["id"])[0] == "ready"
    err = failed(cli("pool", "reinit", held["id"], "--force", role="viewer"))
    assert "storage_pool:manage" in err


def test_views_show_the_reason_and_the_missing_disks(cli, api):
    node = join_node(api, "node-a")
    pool = create_pool(api, "fast", "node-a", FAST)
    stopped_vm_with_made_disk(api, pool["id"], node.id, "web-1")
    failed_report(api, node, "fast", "pool_identity_mismatch")
    shown = ok(cli("pool", "get", pool["id"]))
    assert "reconciliation_reason: pool_identity_mismatch\n" in shown
    assert "vm_disks: 1 (1 missing)\n" in shown
    concept = ok(cli("pool", "get", "fast"))
    assert "vm_disks: 1 (1 missing)\n" in concept
    assert "    reconciliation_reason: pool_identity_mismatch\n" in concept
    [row] = table(ok(cli("vm", "list")))
    assert (row["NAME"], row["PHASE"], row["REASON"]) == ("web-1", "stopped", "disk_missing")
    text = ok(cli("vm", "get", "web-1"))
    assert 'phase: stopped (disk missing: the disk\'s pool "fast" on node node-a is failed' in text
    assert "MISSING (pool_failed)" in text

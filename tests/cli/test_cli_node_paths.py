"""``otherix node delete``, ``node get`` events, ``node provision-default-pool`` and
``pool delete`` of the last default instance (issues 12 item 3, 13 item 9),
against the real server."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from clihelpers import add_vm_disk, create_pool, failed, get_json, heartbeat, join_node, ok

from otherix.store.pools import store as qp
from otherix.store.ports.pools import NewPool


def default_path(api) -> str:
    return api.server.settings.storage_pools.allowed_path_prefixes[0] + "default"


def test_node_delete_lists_the_pools_deleted_with_it(cli, api):
    heartbeat(api, join_node(api, "keeper"))
    heartbeat(api, join_node(api, "node-a"))
    data = create_pool(api, "data", "node-a", "/var/lib/otherix/pools/data")
    out = ok(cli("node", "delete", "node-a", "--force"))
    lines = out.splitlines()
    assert lines[0] == "node node-a deleted"
    assert f"  storage pool data ({data['id']}) /var/lib/otherix/pools/data" in lines
    assert any(line.startswith("  storage pool default (") for line in lines)
    assert lines[-1] == "2 storage pool instance(s) deleted with it; their files are kept"
    _, pools = get_json(api, "/v1/storage-pools")
    assert {p["node"] for p in pools["data"]} == {"keeper"}


def test_node_delete_blocked_by_vm_disks_lists_the_vms(cli, api):
    heartbeat(api, join_node(api, "keeper"))
    heartbeat(api, join_node(api, "busy"))
    pool = create_pool(api, "data", "busy", "/var/lib/otherix/pools/data")
    add_vm_disk(api, pool["id"], "web-1")
    result = cli("node", "delete", "busy", "--force")
    assert failed(result) == "Error: node busy blocked: conflict\n"
    assert result.stdout == (
        "cannot delete node busy: blocked by:\n"
        "  - vm_disks: 1\n"
        "\n"
        "VMs with a disk on this node's pools:\n"
        "  - web-1\n"
        "\n"
        "delete those VMs first (list them with 'otherix vm list --node busy').\n"
    )
    as_json = cli("node", "delete", "busy", "--force", "-o", "json")
    assert as_json.exit_code == 1
    body = json.loads(as_json.stdout)
    assert body["deleted"] is False
    assert body["blocking_resources"] == {"vm_disks": 1}
    assert body["vms"] == ["web-1"]
    assert get_json(api, "/v1/nodes/busy")[0] == 200


def test_provision_default_pool_and_the_event_on_node_get(cli, api):
    node = join_node(api, "node-a")
    heartbeat(api, node)
    _, pools = get_json(api, "/v1/storage-pools")
    (pool,) = pools["data"]
    with api.client("admin") as c:
        c.patch(f"/v1/storage-pools/{pool['id']}", json={"name": "renamed"})
    result = cli("node", "provision-default-pool", "node-a")
    err = failed(result)
    assert err.startswith('Error: default pool "default" not provisioned on node node-a: ')
    assert f'overlaps storage pool "renamed" ({pool["id"]}, path "{default_path(api)}")' in err
    text = ok(cli("node", "get", "node-a"))
    events = text.split("events:\n", 1)[1].splitlines()
    assert len(events) == 2
    assert "  normal  default_pool_provisioned: " in events[0]
    assert (
        '  warning  default_pool_path_held: default pool "default" not provisioned' in (events[1])
    )
    # the viewer's summary has no events
    assert "events" not in ok(cli("node", "get", "node-a", role="viewer"))
    # once the path is free, the command provisions it
    with api.client("admin") as c:
        assert c.delete("/v1/cluster/default-pool").status_code == 204
        assert c.delete(f"/v1/storage-pools/{pool['id']}").status_code == 204
    assert ok(cli("node", "provision-default-pool", "node-a")) == (
        f'default pool "default" provisioned on node node-a at {default_path(api)}\n'
    )
    again = json.loads(ok(cli("node", "provision-default-pool", "node-a", "-o", "json")))
    assert again["outcome"] == "exists"
    assert failed(cli("node", "provision-default-pool", "node-a", role="operator")) == (
        "Error: permission denied: role operator lacks node:manage\n"
    )


def test_node_get_of_a_node_without_events(cli, api):
    join_node(api, "quiet")
    assert ok(cli("node", "get", "quiet")).endswith("events: <none>\n")


def test_pool_delete_of_the_last_default_instance_gives_the_two_ways_on(cli, api):
    heartbeat(api, join_node(api, "node-a"))
    err = failed(cli("pool", "delete", "default", "--force"))
    assert err == (
        'Error: storage pool "default" is the cluster default and this is '
        "its last instance; set another default first ('otherix cluster set-default-pool "
        "NAME') or unset it ('otherix cluster unset-default-pool'), then delete it\n"
    )
    ok(cli("cluster", "unset-default-pool", "--force"))
    assert ok(cli("pool", "delete", "default", "--force")) == "pool default deleted\n"


def test_pool_get_shows_the_conditions_of_legacy_overlapping_rows(cli, api):
    node = join_node(api, "old")
    now = datetime.now(UTC)
    ids = {}
    with api.server.deps.db.write() as conn:  # rows an older server accepted
        for name, path in (
            ("outer", "/var/lib/otherix/pools/o"),
            ("inner", "/var/lib/otherix/pools/o/vms/i"),
        ):
            ids[name] = str(uuid.uuid4())
            qp.insert_pool(
                conn,
                NewPool(
                    id=ids[name], node_id=node.id, name=name,
                    type="local_dir", path=path, config={},
                    created_at=now,
                ),
            )  # fmt: skip
    flat = ok(cli("pool", "get", ids["outer"]))
    assert "conditions:\n  - path_overlap: this pool's directory contains the directory of " in flat
    assert f'storage pool "inner" ({ids["inner"]}' in flat
    concept = ok(cli("pool", "get", "inner"))
    assert "    condition: path_overlap: this pool's directory is inside the directory of " in (
        concept
    )

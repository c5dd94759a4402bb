"""``otherix create|apply|delete -f`` against the real server (§6).

Nodes are made ready by heartbeats and VM tasks are played by a fake agent
(``test_cli_vms_helpers``); the round trip feeds ``pool get|list -o yaml``
and ``vm get -o yaml`` of one server into a second, empty one.
"""

from __future__ import annotations

from clihelpers import Cli, add_vm_disk, failed, get_json, heartbeat, join_node, ok, pool_report
from test_cli_vms_helpers import (
    IMAGE,
    ROOM,
    PacedAgent,
    created,
    make_vm,
    ready_node,
    success,
    vm_of,
)

from otherix.cli.context import CliContext
from support.factories import Api
from support.server import ADMIN, ApiServer, make_settings

FAST = "/var/lib/otherix/pools/fast"

FAST_POOL = f"""\
apiVersion: otherix/v1
kind: StoragePool
metadata: {{name: fast}}
spec:
  path: {FAST}
  nodeList: [node-1, node-2]
"""


def web(pool: str = "fast", **spec: object) -> str:
    extra = "".join(f"\n  {k}: {v}" for k, v in spec.items())
    return (
        "apiVersion: otherix/v1\nkind: VM\nmetadata: {name: web-1}\n"
        f"spec:\n  imageURL: {IMAGE}\n  pool: {pool}{extra}\n"
    )


def instances(api, name: str = "fast") -> dict[str, str]:
    """node -> path of each instance of ``name``."""
    status, body = get_json(api, f"/v1/storage-pools/{name}")
    return {i["node"]: i["path"] for i in body["instances"]} if status == 200 else {}


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_create_expands_node_list_and_a_second_create_fails(cli, api, tmp_path):
    join_node(api, "node-1")
    join_node(api, "node-2")
    path = write(tmp_path, "fast.yaml", FAST_POOL)
    assert ok(cli("create", "-f", path)) == (
        "created StoragePool/fast on node-1\ncreated StoragePool/fast on node-2\n"
    )
    assert instances(api) == {"node-1": FAST, "node-2": FAST}
    result = cli("create", "-f", path)
    assert result.stdout == ""
    assert failed(result) == (
        "StoragePool/fast on node-1: already exists\n"
        "StoragePool/fast on node-2: already exists\n"
        "Error: 2 of 2 objects failed\n"
    )


def test_an_overlapping_pool_says_why_not_already_exists(cli, api, tmp_path):
    join_node(api, "node-1")
    ok(
        cli(
            "create",
            "-f",
            write(tmp_path, "fast.yaml", FAST_POOL.replace("node-1, node-2", "node-1")),
        )
    )
    inner = FAST_POOL.replace("name: fast", "name: inner").replace("node-1, node-2", "node-1")
    path = write(tmp_path, "inner.yaml", inner.replace(f"path: {FAST}", f"path: {FAST}/inner"))
    for args in (("create", "-f", path, "--dry-run"), ("create", "-f", path)):
        err = failed(cli(*args))
        assert "already exists" not in err, args
        assert f'path "{FAST}/inner" is inside the directory of storage pool "fast"' in err, args
    assert instances(api, "inner") == {}


def test_create_is_best_effort(cli, api, tmp_path):
    join_node(api, "node-1")
    path = write(tmp_path, "fast.yaml", FAST_POOL)  # node-2 does not exist
    result = cli("create", "-f", path)
    assert result.stdout == "created StoragePool/fast on node-1\n"
    assert failed(result) == (
        'StoragePool/fast on node-2: node "node-2" not found; '
        "run 'otherix node list' to see the nodes\n"
        "Error: 1 of 2 objects failed\n"
    )


def test_apply_creates_what_is_missing_then_is_idempotent(cli, api, tmp_path):
    ready_node(api, "node-1")
    join_node(api, "node-2")
    cli(
        "create",
        "-f",
        write(tmp_path, "one.yaml", FAST_POOL.replace("[node-1, node-2]", "[node-1]")),
    )
    path = write(tmp_path, "all.yaml", FAST_POOL + "---\n" + web(pool="default", node="node-1"))
    assert ok(cli("apply", "-f", path, "--dry-run")) == (
        "unchanged StoragePool/fast on node-1\n"
        "create StoragePool/fast on node-2\n"
        "create VM/web-1 (on pool default, node node-1)\n"
    )
    assert instances(api) == {"node-1": FAST}
    assert ok(cli("apply", "-f", path)) == (
        "unchanged StoragePool/fast on node-1\n"
        "created StoragePool/fast on node-2\n"
        "created VM/web-1\n"
    )
    assert vm_of(api, "web-1")["node_hint"] == "node-1"
    again = (
        "unchanged StoragePool/fast on node-1\n"
        "unchanged StoragePool/fast on node-2\n"
        "unchanged VM/web-1\n"
    )
    assert ok(cli("apply", "-f", path)) == again
    assert ok(cli("apply", "-f", path, "--dry-run")) == again


def test_apply_reports_drift_and_changes_nothing(cli, api, tmp_path):
    ready_node(api, "node-1")
    join_node(api, "node-2")
    cli("create", "-f", write(tmp_path, "fast.yaml", FAST_POOL))
    make_vm(api, "web-1", pool="default", vcpus=2)
    moved = FAST_POOL.replace("nodeList: [node-1, node-2]", "nodeList: [node-1, node-2, node-3]")
    moved = moved.replace(FAST, "/var/lib/otherix/pools/b")
    path = write(tmp_path, "drift.yaml", moved + "---\n" + web(pool="default", vcpus=4))
    plan = (
        "drift StoragePool/fast on node-1: path is /var/lib/otherix/pools/fast, manifest says "
        "/var/lib/otherix/pools/b (immutable; delete and re-create to change)\n"
        "drift StoragePool/fast on node-2: path is /var/lib/otherix/pools/fast, manifest says "
        "/var/lib/otherix/pools/b (immutable; delete and re-create to change)\n"
        "create StoragePool/fast on node-3\n"
        "drift VM/web-1: spec.vcpus is 2, manifest says 4; "
        "(VMs are not updated in place; delete and re-create to change)\n"
    )
    result = cli("apply", "-f", path, "--dry-run")
    # The server refuses the one create of the plan: node-3 does not exist.
    assert result.stdout == plan.replace("create StoragePool/fast on node-3\n", "")
    missing = "node \"node-3\" not found; run 'otherix node list' to see the nodes"
    assert failed(result) == (
        f"StoragePool/fast on node-3: refused: {missing}\n"
        "Error: dry run: of 4 objects, 3 drifted and 1 would be refused (nothing was changed)\n"
    )
    result = cli("apply", "-f", path)
    assert result.stdout == plan.replace("create StoragePool/fast on node-3\n", "")
    assert failed(result) == (
        f"StoragePool/fast on node-3: {missing}\nError: 4 of 4 objects failed\n"
    )
    assert instances(api) == {"node-1": FAST, "node-2": FAST}
    assert vm_of(api, "web-1")["vcpus"] == 2


def test_delete_in_reverse_order_skips_a_blocked_pool(cli, api, tmp_path):
    join_node(api, "node-1")
    join_node(api, "node-2")
    path = write(tmp_path, "all.yaml", FAST_POOL + "---\n" + web(pool="ghost"))
    cli("create", "-f", path)  # the VM cannot be placed: it is deleted at once
    _, concept = get_json(api, "/v1/storage-pools/fast")
    on_1 = next(i for i in concept["instances"] if i["node"] == "node-1")
    add_vm_disk(api, on_1["id"], "squatter")
    answered_no = cli("delete", "-f", path, tty=True, input="n\n")
    assert failed(answered_no) == (
        "delete 3 objects (VM/web-1, StoragePool/fast on node-2, StoragePool/fast on node-1)? "
        "[y/N]: Error: aborted: did not delete 3 objects\n"
    )
    assert vm_of(api, "web-1") is not None
    not_asked = cli("delete", "-f", path)  # not a terminal and no --force: refused
    assert not_asked.exit_code == 2
    assert not_asked.stderr.endswith(
        "Error: refusing to delete 3 objects without confirmation: stdin is not a terminal; "
        "pass --force to delete 3 objects without being asked\n"
    )
    assert vm_of(api, "web-1") is not None
    result = cli("delete", "-f", path, "--force")
    assert result.stdout == "deleted VM/web-1\ndeleted StoragePool/fast on node-2\n"
    assert failed(result) == (
        "StoragePool/fast on node-1: blocked by vm_disks: 1 (skipped, not forced)\n"
        "Error: 1 of 3 objects failed\n"
    )
    assert instances(api) == {"node-1": FAST}
    assert vm_of(api, "web-1") is None
    result = cli("delete", "-f", path, "--force")
    assert failed(result).startswith("VM/web-1: not found\nStoragePool/fast on node-2: not found\n")


def test_create_wait_then_delete_wait_frees_the_pool(cli, api, tmp_path):
    node = ready_node(api, "node-1")
    path = write(
        tmp_path,
        "all.yaml",
        FAST_POOL.replace("[node-1, node-2]", "[node-1]")
        + "---\n"
        + web(pool="default", powerState="stopped"),
    )
    agent = PacedAgent(api, node, [created])

    def sleep(seconds: float) -> None:
        heartbeat(api, node, [pool_report("default", **ROOM), pool_report("fast", **ROOM)])
        agent.sleep(seconds)

    context = CliContext(sleep=sleep, monotonic=lambda: agent.clock)
    result = cli("create", "-f", path, "--wait", context=context)
    agent.join()
    assert ok(result) == (
        "created StoragePool/fast on node-1\ncreated VM/web-1\n"
        "ready StoragePool/fast on node-1\nready VM/web-1\n"
    )
    assert vm_of(api, "web-1")["status"]["phase"] == "stopped"

    # The VM's disk lives on "default"; deleting it waits for the agent's vm.delete.
    both = FAST_POOL.replace("[node-1, node-2]", "[node-1]") + "---\n" + web(pool="default")
    assert vm_of(api, "web-1")["status"]["state"] == "stopped"  # powerState: stopped
    agent = PacedAgent(api, node, [success()], task_type="vm.delete")
    result = cli(
        "delete",
        "-f",
        write(tmp_path, "both.yaml", both),
        "--wait",
        "--force",
        context=agent.context(),
    )
    agent.join()
    assert ok(result) == "deleted VM/web-1\ndeleted StoragePool/fast on node-1\n"
    assert vm_of(api, "web-1") is None
    assert instances(api) == {}


def test_delete_from_a_manifest_skips_a_running_vm_and_never_forces_it(cli, api, tmp_path):
    node = ready_node(api, "node-1")
    path = write(tmp_path, "vm.yaml", web(pool="default"))
    agent = PacedAgent(api, node, [created])  # the agent starts it with its disk
    context = CliContext(sleep=agent.sleep, monotonic=lambda: agent.clock)
    ok(cli("create", "-f", path, "--wait", context=context))
    agent.join()
    assert vm_of(api, "web-1")["status"]["state"] == "running"
    result = cli("delete", "-f", path, "--force")
    assert result.exit_code == 1
    assert result.stderr == (
        "VM/web-1: running: stop it first ('otherix vm stop web-1') (skipped, not forced)\n"
        "Error: 1 of 1 objects failed\n"
    )
    assert vm_of(api, "web-1")["status"]["phase"] == "stopped"  # nothing was deleted


def test_round_trip_into_an_empty_server(cli, api, tmp_path):
    for name in ("node-1", "node-2"):
        ready_node(api, name)
    ok(cli("create", "-f", write(tmp_path, "fast.yaml", FAST_POOL)))
    make_vm(api, "web-1", pool="fast", node="node-2", vcpus=4, memory_mb=1024, disk_gib=20)
    pool_yaml = ok(cli("pool", "get", "fast", "-o", "yaml"))
    list_yaml = ok(cli("pool", "list", "-o", "yaml"))
    vm_yaml = ok(cli("vm", "get", "web-1", "-o", "yaml"))
    assert "nodeList" in pool_yaml

    # Same path allowlist, so the auto-provisioned default pools get the same path.
    allowed = api.server.settings.storage_pools.allowed_path_prefixes
    prefixes = {"storage_pools.allowed_path_prefixes": allowed}
    server = ApiServer(make_settings(tmp_path / "second", **prefixes)).start()
    try:
        server.services.user_service.ensure_bootstrap_admin(*ADMIN)
        second = Api(server, {"admin": server.login(*ADMIN)})
        home = tmp_path / "home2"
        home.mkdir()
        cli2 = Cli(url=second.url, tokens=second.tokens, home=home)
        for name in ("node-1", "node-2"):
            ready_node(second, name)
        assert ok(cli2("create", "-f", "-", input=pool_yaml)) == (
            "created StoragePool/fast on node-1\ncreated StoragePool/fast on node-2\n"
        )
        applied = ok(cli2("apply", "-f", "-", input=list_yaml))
        assert set(applied.splitlines()) == {
            f"unchanged StoragePool/{name} on {node}"
            for name in ("default", "fast")
            for node in ("node-1", "node-2")
        }
        assert ok(cli2("create", "-f", "-", input=vm_yaml)) == "created VM/web-1\n"
        assert ok(cli2("pool", "get", "fast", "-o", "yaml")) == pool_yaml
        assert ok(cli2("pool", "list", "-o", "yaml")) == list_yaml
        assert ok(cli2("vm", "get", "web-1", "-o", "yaml")) == vm_yaml
        assert ok(cli2("apply", "-f", "-", input=vm_yaml)) == "unchanged VM/web-1\n"
    finally:
        server.stop()

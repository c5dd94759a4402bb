"""``otherix pool delete`` (§5.3) against the real server."""

from __future__ import annotations

import json
from typing import ClassVar

from clihelpers import add_vm_disk, create_pool, failed, get_json, join_node, ok, usage

from otherix.cli.context import CliContext
from otherix.client.api import ApiClient

FAST = "/var/lib/otherix/pools/fast"


def exists(api, pool_id):
    return get_json(api, f"/v1/storage-pools/{pool_id}")[0] == 200


def fast_on_two_nodes(api):
    join_node(api, "node-a")
    join_node(api, "node-b")
    return create_pool(api, "fast", "node-a", FAST), create_pool(api, "fast", "node-b", FAST)


def test_delete_by_uuid_and_by_unique_name(cli, api):
    join_node(api, "node-a")
    one = create_pool(api, "one", "node-a", FAST + "1")
    two = create_pool(api, "two", "node-a", FAST + "2")
    assert ok(cli("pool", "delete", "--force", one["id"])) == f"pool {one['id']} deleted\n"
    assert not exists(api, one["id"])
    assert ok(cli("pool", "delete", "--force", "two", "-o", "json")) == (
        '{\n  "deleted": true,\n  "identifier": "two"\n}\n'
    )
    assert not exists(api, two["id"])
    assert failed(cli("pool", "delete", "--force", "two")) == (
        "Error: pool \"two\" not found; run 'otherix pool list' to see the pools\n"
    )


def test_delete_with_node_picks_that_instance(cli, api):
    fa, fb = fast_on_two_nodes(api)
    assert ok(cli("pool", "delete", "--force", "fast", "--node", "node-a")) == (
        "pool fast on node node-a deleted\n"
    )
    assert not exists(api, fa["id"])
    assert exists(api, fb["id"])


def test_delete_with_node_errors(cli, api):
    fa, fb = fast_on_two_nodes(api)
    _, concept = get_json(api, "/v1/storage-pools/fast")
    nodes = ", ".join(i["node"] for i in concept["instances"])
    assert failed(cli("pool", "delete", "--force", "fast", "--node", "node-9")) == (
        f'Error: pool "fast" has no instance on node "node-9"; instances exist on: {nodes}\n'
    )
    assert usage(cli("pool", "delete", "--force", fa["id"], "--node", "node-a")) == (
        "Error: --node cannot be combined with an instance UUID: "
        "a UUID already targets one instance\n"
    )
    assert exists(api, fa["id"])
    assert exists(api, fb["id"])


def test_ambiguous_name_lists_instances_and_both_retry_forms(cli, api):
    fast_on_two_nodes(api)
    _, concept = get_json(api, "/v1/storage-pools/fast")
    first, second = concept["instances"]
    result = cli("pool", "delete", "--force", "fast")
    assert result.exit_code == 1
    assert result.stdout == (
        'pool "fast" maps to multiple per-node instances — pick one:\n'
        "\n"
        f"  node {first['node']:<14}  {first['id']}\n"
        f"  node {second['node']:<14}  {second['id']}\n"
        "retry by node:\n"
        "  otherix pool delete fast --node <node>\n"
        "or by instance UUID:\n"
        "  otherix pool delete <uuid>\n"
    )
    assert result.stderr == 'Error: pool "fast" is ambiguous: 2 instances\n'
    assert all(exists(api, i["id"]) for i in concept["instances"])

    result = cli("pool", "delete", "--force", "fast", "-o", "json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "deleted": False,
        "identifier": "fast",
        "code": "pool_name_ambiguous",
        "instances": [{"node": i["node"], "id": i["id"]} for i in concept["instances"]],
    }


def test_prompt_on_a_tty(cli, api):
    fa, _ = fast_on_two_nodes(api)
    result = cli("pool", "delete", "fast", "--node", "node-a", tty=True, input="n\n")
    assert failed(result) == (
        "delete storage pool fast on node node-a? [y/N]: "
        "Error: aborted: did not delete pool fast on node node-a\n"
    )
    assert result.stdout == ""
    assert exists(api, fa["id"])

    result = cli("pool", "delete", "fast", "--node", "node-a", tty=True, input="\n")
    assert failed(result).endswith("Error: aborted: did not delete pool fast on node node-a\n")

    result = cli("pool", "delete", "fast", "--node", "node-a", tty=True, input="Yes\n")
    assert ok(result) == "pool fast on node node-a deleted\n"
    assert not exists(api, fa["id"])


def test_force_skips_the_prompt_and_no_tty_refuses_without_it(cli, api):
    fa, fb = fast_on_two_nodes(api)
    result = cli("pool", "delete", fa["id"], "--force", tty=True)
    assert ok(result) == f"pool {fa['id']} deleted\n"
    assert result.stderr == ""
    result = cli("pool", "delete", fb["id"], tty=False)
    assert usage(result) == (
        f"Error: refusing to delete pool {fb['id']} without confirmation: stdin is not a "
        f"terminal; pass --force to delete pool {fb['id']} without being asked\n"
    )
    assert exists(api, fb["id"])
    result = cli("pool", "delete", fb["id"], tty=False, input="y\n")  # piped "y" is no answer
    assert result.exit_code == 2
    assert exists(api, fb["id"])
    result = cli("pool", "delete", fb["id"], "--force", tty=False)
    assert ok(result) == f"pool {fb['id']} deleted\n"


def test_blocked_by_vm_disks(cli, api):
    join_node(api, "node-a")
    pool = create_pool(api, "fast", "node-a", FAST)
    add_vm_disk(api, pool["id"], "web-1")
    add_vm_disk(api, pool["id"], "web-2")
    result = cli("pool", "delete", "--force", "fast")
    assert result.exit_code == 1
    assert result.stdout == (
        "cannot delete pool fast — blocked by:\n"
        "  - vm_disks: 2\n"
        "\n"
        "VMs with a disk on this pool:\n"
        "  - web-1\n"
        "  - web-2\n"
        "\n"
        "clean up the listed dependents before retrying delete.\n"
    )
    assert result.stderr == "Error: pool fast blocked: conflict\n"
    assert exists(api, pool["id"])

    result = cli("pool", "delete", "--force", pool["id"], "-o", "json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "deleted": False,
        "identifier": pool["id"],
        "code": "conflict",
        "blocking_resources": {"vm_disks": 2},
        "vms": ["web-1", "web-2"],
    }


class StubVmsApi(ApiClient):
    """The real client, except ``GET /v1/vms`` answers from a canned list (no VM API yet)."""

    calls: ClassVar[list[dict]] = []

    def json(self, method, path, **kwargs):
        if method == "GET" and path == "/v1/vms":
            StubVmsApi.calls.append(kwargs.get("params") or {})
            return {"data": [{"name": "web-1"}, {"name": "web-2"}], "meta": {}}
        return super().json(method, path, **kwargs)


def test_blocked_lists_vm_names_when_the_vm_api_answers(cli, api):
    join_node(api, "node-a")
    pool = create_pool(api, "fast", "node-a", FAST)
    add_vm_disk(api, pool["id"], "web-1")
    StubVmsApi.calls = []
    context = CliContext(client_factory=lambda url, token, timeout: StubVmsApi(url, token))
    result = cli("pool", "delete", "--force", pool["id"], context=context)
    assert result.exit_code == 1
    assert result.stdout == (
        f"cannot delete pool {pool['id']} — blocked by:\n"
        "  - vm_disks: 1\n"
        "\n"
        "VMs with a disk on this pool:\n"
        "  - web-1\n"
        "  - web-2\n"
        "\n"
        "clean up the listed dependents before retrying delete.\n"
    )
    assert StubVmsApi.calls == [{"pool": pool["id"], "limit": 200}]

    context = CliContext(client_factory=lambda url, token, timeout: StubVmsApi(url, token))
    result = cli("pool", "delete", "--force", pool["id"], "-o", "json", context=context)
    assert json.loads(result.stdout)["vms"] == ["web-1", "web-2"]


class LegacyInUseApi(ApiClient):
    """An older server: a blocked delete answers ``resource_in_use``."""

    def delete_pool(self, ref):
        from otherix.client.errors import api_error

        raise api_error(
            409,
            "resource_in_use",
            "in use",
            {"kind": "pool", "blocking_resources": {"vm_disks": 3}},
        )


def test_blocked_accepts_the_legacy_code(cli, api):
    context = CliContext(client_factory=lambda url, token, timeout: LegacyInUseApi(url, token))
    result = cli("pool", "delete", "--force", "pool-dev", context=context)
    assert result.exit_code == 1
    assert "cannot delete pool pool-dev — blocked by:\n  - vm_disks: 3\n" in result.stdout
    assert result.stderr == "Error: pool pool-dev blocked: resource_in_use\n"


def test_delete_needs_admin(cli, api):
    join_node(api, "node-a")
    pool = create_pool(api, "fast", "node-a", FAST)
    err = failed(cli("pool", "delete", "--force", "fast", role="viewer"))
    assert err == "Error: permission denied: role viewer lacks storage_pool:manage\n"
    assert exists(api, pool["id"])

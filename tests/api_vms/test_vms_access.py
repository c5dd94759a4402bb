"""Who sees and deletes which VM, and ``GET /v1/vms`` filters and pagination."""

from __future__ import annotations

import uuid

import pytest
from test_vms_helpers import add_pool, create_vm, error_of, get, ready_node


def _names(r):
    assert r.status_code == 200, r.text
    return [vm["name"] for vm in r.json()["data"]]


@pytest.mark.security
def test_developers_see_and_delete_only_their_own_vms(api):
    create_vm(api, "dev-vm", role="developer", pool="p")
    create_vm(api, "ops-vm", role="operator", pool="p")
    assert _names(get(api, "/v1/vms", role="developer")) == ["dev-vm"]
    for role in ("admin", "operator", "viewer"):
        assert _names(get(api, "/v1/vms", role=role)) == ["dev-vm", "ops-vm"], role
    error_of(get(api, "/v1/vms/ops-vm", role="developer"), 404, "not_found")
    assert get(api, "/v1/vms/ops-vm", role="viewer").json()["owner"] == "operator"
    with api.client("developer") as c:
        error_of(c.delete("/v1/vms/ops-vm"), 404, "not_found")
    with api.client("viewer") as c:
        err = error_of(c.delete("/v1/vms/dev-vm"), 403, "permission_denied")
        assert err["details"] == {"required": "vm:delete"}
    with api.client("operator") as c:  # vm:delete any
        assert c.delete("/v1/vms/dev-vm").status_code == 204
    assert _names(get(api, "/v1/vms", role="admin")) == ["ops-vm"]


@pytest.mark.security
def test_anonymous_is_401(api):
    for method, path in (("GET", "/v1/vms"), ("GET", "/v1/vms/x"), ("DELETE", "/v1/vms/x")):
        with api.client(None) as c:
            error_of(c.request(method, path), 401, "unauthenticated")


@pytest.fixture
def fleet(api):
    """node-a: default + fast; node-b: default. One VM placed on each, one pending."""
    a = ready_node(api, "node-a")
    b = ready_node(api, "node-b")
    fast = add_pool(api, a, "fast")
    create_vm(api, "on-fast", pool="fast")
    create_vm(api, "on-b", node="node-b")
    create_vm(api, "waiting", pool="fast", node="node-b")  # pool_not_on_node
    create_vm(api, "elsewhere", pool="slow", role="admin")
    return {"a": a, "b": b, "fast": fast}


def test_list_filters(api, fleet):
    fast = fleet["fast"]
    by_name = _names(get(api, "/v1/vms", pool="fast"))
    assert by_name == ["on-fast", "waiting"]
    assert _names(get(api, "/v1/vms", pool="FAST")) == by_name
    # what the CLI's blocked pool delete asks: VMs with a disk on that instance
    assert _names(get(api, "/v1/vms", pool=fast["id"], limit=200)) == ["on-fast"]
    assert _names(get(api, "/v1/vms", pool="default")) == ["on-b"]
    assert _names(get(api, "/v1/vms", pool="slow")) == ["elsewhere"]
    assert _names(get(api, "/v1/vms", pool=str(uuid.uuid4()))) == []
    assert _names(get(api, "/v1/vms", pool="nothing")) == []
    assert _names(get(api, "/v1/vms", node="node-b")) == ["on-b"]
    assert _names(get(api, "/v1/vms", node=fleet["a"].id)) == ["on-fast"]
    assert _names(get(api, "/v1/vms", status="pending", pool="slow")) == ["elsewhere"]
    assert _names(get(api, "/v1/vms", status="stopped")) == []
    assert _names(get(api, "/v1/vms", status="pending", role="developer", pool="fast")) == [
        "on-fast",
        "waiting",
    ]
    assert _names(get(api, "/v1/vms", role="developer", pool="slow")) == []  # admin's VM
    error_of(get(api, "/v1/vms", status="running"), 400, "validation_failed")
    error_of(get(api, "/v1/vms", node="node-zz"), 400, "validation_failed")


def test_lists_page_by_keyset_and_omit_disks(api, fleet):
    seen, cursor = [], None
    while True:
        r = get(api, "/v1/vms", limit=1, **({"cursor": cursor} if cursor else {}))
        body = r.json()
        assert len(body["data"]) <= 1
        seen += [vm["name"] for vm in body["data"]]
        assert all(vm["disks"] is None for vm in body["data"])
        cursor = body["meta"]["next_cursor"]
        if cursor is None:
            break
    assert seen == ["on-fast", "on-b", "waiting", "elsewhere"]
    error_of(get(api, "/v1/vms", cursor="nope"), 400, "validation_failed")
    error_of(get(api, "/v1/vms", limit=0), 400, "validation_failed")


def test_a_pending_vm_view_shows_its_request_and_reason(api, fleet):
    vm = get(api, "/v1/vms/waiting").json()
    assert (vm["pool"], vm["pool_id"], vm["node"], vm["node_hint"]) == (
        "fast",
        None,
        None,
        "node-b",
    )
    assert vm["status"]["reason"] == "pool_not_on_node"
    assert vm["disks"] == []


def test_the_cli_blocked_pool_delete_lists_the_vms_holding_disks(api, tmp_path):
    """``otherix pool delete`` asks ``GET /v1/vms?pool=<uuid>&limit=200`` for names."""
    from click.testing import CliRunner

    from otherix.cli.context import CliContext
    from otherix.cli.main import cli

    node = ready_node(api, "node-a")
    fast = add_pool(api, node, "fast")
    create_vm(api, "web-1", pool="fast")
    create_vm(api, "web-2", pool="fast", role="operator")
    context = CliContext()
    context.env = {"HOME": str(tmp_path)}
    args = ["--endpoint", api.url, "--token", api.tokens["admin"], "pool", "delete", "--force"]
    args.append(fast["id"])
    result = CliRunner().invoke(cli, args, obj=context, prog_name="otherix")
    assert result.exit_code == 1, result.output
    assert result.stdout == (
        f"cannot delete pool {fast['id']} — blocked by:\n"
        "  - vm_disks: 2\n"
        "\n"
        "VMs with a disk on this pool:\n"
        "  - web-1\n"
        "  - web-2\n"
        "\n"
        "clean up the listed dependents before retrying delete.\n"
    )

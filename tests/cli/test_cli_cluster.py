"""``otherix cluster get|set|unset-default-pool`` (§5.4) against the real server."""

from __future__ import annotations

from clihelpers import create_pool, failed, get_json, join_node, ok, usage

HINT = "no default pool configured (run 'otherix cluster set-default-pool <name>' to configure)\n"


def default_name(api):
    status, body = get_json(api, "/v1/cluster/default-pool")
    return body["name"] if status == 200 else None


def test_get_set_unset(cli, api):
    # The server seeds the default from storage_pools.default_pool_name ("default").
    assert ok(cli("cluster", "get-default-pool", role="viewer")) == "default-pool: default\n"
    assert ok(cli("cluster", "get-default-pool", "-o", "json")) == '{\n  "name": "default"\n}\n'

    assert ok(cli("cluster", "unset-default-pool", "--force")) == "default pool cleared\n"
    assert default_name(api) is None
    result = cli("cluster", "get-default-pool")
    assert ok(result) == HINT  # exit 0 when unset
    assert ok(cli("cluster", "get-default-pool", "-o", "json")) == "null\n"

    join_node(api, "node-a")
    create_pool(api, "Fast", "node-a", "/var/lib/otherix/pools/fast")
    assert ok(cli("cluster", "set-default-pool", "fast")) == "default pool set to 'Fast'\n"
    assert default_name(api) == "Fast"
    assert ok(cli("cluster", "set-default-pool", "FAST", "-o", "json")) == (
        '{\n  "name": "Fast"\n}\n'
    )
    # Idempotent unset.
    ok(cli("cluster", "unset-default-pool", "--force"))
    ok(cli("cluster", "unset-default-pool", "--force"))


def test_set_rejects_unknown_names_and_uuids(cli, api):
    join_node(api, "node-a")
    pool = create_pool(api, "fast", "node-a", "/var/lib/otherix/pools/fast")
    hint = "not found; run 'otherix pool list' to see the pools\n"
    assert failed(cli("cluster", "set-default-pool", "nope")) == f'Error: pool "nope" {hint}'
    assert failed(cli("cluster", "set-default-pool", pool["id"])) == (
        f'Error: pool "{pool["id"]}" {hint}'
    )
    assert default_name(api) == "default"


def test_unset_without_a_tty_needs_force(cli, api):
    result = cli("cluster", "unset-default-pool", tty=False)
    assert usage(result) == (
        "Error: refusing to clear the cluster default pool without confirmation: "
        "stdin is not a terminal; pass --force to clear the cluster default pool "
        "without being asked\n"
    )
    assert result.stdout == ""
    assert default_name(api) == "default"


def test_unset_prompts_on_stderr_on_a_tty(cli, api):
    result = cli("cluster", "unset-default-pool", tty=True, input="yep\n")
    assert failed(result) == (
        "Clear cluster default pool? [y/N]: "
        "Error: aborted: did not clear the cluster default pool\n"
    )
    assert result.stdout == ""
    assert default_name(api) == "default"

    result = cli("cluster", "unset-default-pool", tty=True, input="YES\n")
    assert ok(result) == "default pool cleared\n"
    assert result.stderr == "Clear cluster default pool? [y/N]: "
    assert default_name(api) is None


def test_changing_the_default_needs_admin(cli, api):
    err = failed(cli("cluster", "set-default-pool", "x", role="operator"))
    assert err == "Error: permission denied: role operator lacks cluster:manage\n"
    err = failed(cli("cluster", "unset-default-pool", "--force", role="developer"))
    assert err == "Error: permission denied: role developer lacks cluster:manage\n"
    assert default_name(api) == "default"

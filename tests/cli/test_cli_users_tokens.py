"""``otherix user`` and ``otherix token`` against the real server."""

from __future__ import annotations

import json

from clihelpers import failed, get_json, ok, usage


def test_user_list_create_delete(cli, api):
    out = ok(cli("user", "list"))
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "AGE"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["admin", "admin"],
        ["operator", "operator"],
        ["developer", "developer"],
        ["viewer", "viewer"],
    ]

    out = ok(cli("user", "create", "alice", "--role", "developer", "--password", "alice-pass-1"))
    assert out == "user alice created (role developer)\n"
    status, body = get_json(api, "/v1/users/alice")
    assert (status, body["role"]) == (200, "developer")

    ids = ok(cli("user", "list", "--show-ids"))
    assert ids.splitlines()[0].split() == ["ID", "NAME", "ROLE", "AGE"]
    assert body["id"] in ids

    assert ok(cli("user", "delete", "--force", "alice")) == "user alice deleted\n"
    assert get_json(api, "/v1/users/alice")[0] == 404


def test_user_create_json_and_prompted_password(cli, api):
    created = json.loads(
        ok(cli("user", "create", "bob", "--password", "bob-pass-12", "-o", "json"))
    )
    assert created["username"] == "bob"
    assert created["role"] == "viewer"

    result = cli("user", "create", "carol", tty=True, input="carol-pass-1\ncarol-pass-1\n")
    assert ok(result) == "user carol created (role viewer)\n"
    assert "carol-pass-1" not in result.stderr
    with api.server.client() as c:
        r = c.post("/v1/auth/login", json={"username": "carol", "password": "carol-pass-1"})
        assert r.status_code == 200

    assert usage(cli("user", "create", "dave")) == (
        "Error: missing --password (or set OTHERIX_NEW_PASSWORD)\n"
    )


def test_user_delete_asks_on_a_tty(cli, api):
    ok(cli("user", "create", "erin", "--password", "erin-pass-1"))
    result = cli("user", "delete", "erin", tty=True, input="n\n")
    assert failed(result) == "delete user erin? [y/N]: Error: aborted: did not delete user erin\n"
    assert get_json(api, "/v1/users/erin")[0] == 200
    assert usage(cli("user", "delete", "erin")).startswith("Error: refusing to delete user erin")
    assert get_json(api, "/v1/users/erin")[0] == 200


def test_developer_gets_the_apis_permission_denied(cli):
    result = cli("user", "list", role="developer")
    assert failed(result) == "Error: permission denied: role developer lacks user:read\n"
    assert result.stdout == ""
    result = cli("user", "create", "x", "--password", "xxxxxxxx", role="operator")
    assert failed(result) == ("Error: permission denied: role operator lacks user:manage\n")


def test_token_create_list_revoke(cli, api):
    result = cli("token", "create", "ci", "--expires-in", "30d", role="developer")
    lines = ok(result).splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["id", "name", "expires_at", "token"]
    token_id = lines[0].split(": ", 1)[1]
    secret = lines[3].split(": ", 1)[1]
    assert secret.startswith("otx_")
    assert result.stderr == "store this token now: it cannot be shown again\n"

    # The new token works, as the developer.
    with api.server.client(secret) as c:
        assert c.get("/v1/users/me").json()["username"] == "developer"

    out = ok(cli("token", "list", role="developer"))
    header, row = out.splitlines()
    assert header.split() == ["ID", "NAME", "PREFIX", "STATUS", "EXPIRES", "LAST_USED", "AGE"]
    cells = row.split()
    assert cells[:4] == [token_id, "ci", secret[:8], "active"]
    assert cells[5] != "never"  # it was just used

    refused = cli("token", "revoke", token_id, role="developer")  # no terminal, no --force
    assert usage(refused) == (
        f"Error: refusing to revoke API token {token_id} without confirmation: stdin is not "
        f"a terminal; pass --force to revoke API token {token_id} without being asked\n"
    )
    with api.server.client(secret) as c:
        assert c.get("/v1/users/me").status_code == 200
    declined = cli("token", "revoke", token_id, role="developer", tty=True, input="n\n")
    assert failed(declined).endswith(f"Error: aborted: did not revoke API token {token_id}\n")
    revoked = cli("token", "revoke", "--force", token_id, role="developer")
    assert ok(revoked) == f"token {token_id} revoked\n"
    with api.server.client(secret) as c:
        assert c.get("/v1/users/me").status_code == 401
    assert ok(cli("token", "list", role="developer")).count("\n") == 1  # header only
    assert "revoked" in ok(cli("token", "list", "--all", role="developer"))


def test_token_create_json_and_bad_duration(cli):
    body = json.loads(ok(cli("token", "create", "x", "-o", "json", role="viewer")))
    assert body["token"].startswith("otx_")
    assert body["expires_at"] is None
    assert usage(cli("token", "create", "y", "--expires-in", "soon")) == (
        'Error: --expires-in: invalid duration "soon" (use a number with a unit: '
        "ms, s, m, h or d, e.g. 24h)\n"
    )
    assert (
        cli(
            "token", "create", "y", "--expires-in", "1d", "--expires-at", "2030-01-01T00:00:00Z"
        ).exit_code
        == 2
    )


def test_revoking_an_unknown_token_is_not_found(cli):
    err = failed(cli("token", "revoke", "--force", "00000000-0000-4000-8000-000000000000"))
    assert err == (
        'Error: API token "00000000-0000-4000-8000-000000000000" not found; '
        "run 'otherix token list' to see the API tokens\n"
    )

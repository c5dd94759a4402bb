"""``otherix user disable|enable`` against the real server: the user's sessions
end, their logins and API tokens are refused until enabled again."""

from __future__ import annotations

import httpx
from clihelpers import failed, get_json, ok


def _login(url: str, username: str, password: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/auth/login", json={"username": username, "password": password})


def test_disable_then_enable(cli, api):
    ok(cli("user", "create", "frank", "--role", "developer", "--password", "frank-pass-1"))
    session = _login(api.url, "frank", "frank-pass-1").json()
    headers = {"Authorization": f"Bearer {session['access_token']}"}
    token = httpx.post(
        f"{api.url}/v1/users/me/api-tokens", json={"name": "ci"}, headers=headers
    ).json()["token"]

    assert ok(cli("user", "disable", "frank")) == "user frank disabled; every session ended\n"
    assert get_json(api, "/v1/users/frank")[1]["disabled_at"] is not None
    for bearer in (session["access_token"], token):
        r = httpx.get(f"{api.url}/v1/users/me", headers={"Authorization": f"Bearer {bearer}"})
        assert (r.status_code, r.json()["error"]["code"]) == (401, "account_disabled")
    r = httpx.post(f"{api.url}/v1/auth/refresh", json={"refresh_token": session["refresh_token"]})
    assert r.status_code == 401
    assert _login(api.url, "frank", "frank-pass-1").json()["error"]["code"] == "account_disabled"

    assert ok(cli("user", "enable", "frank")) == "user frank enabled\n"
    assert get_json(api, "/v1/users/frank")[1]["disabled_at"] is None
    r = httpx.get(f"{api.url}/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200  # API tokens work again
    assert _login(api.url, "frank", "frank-pass-1").status_code == 200
    r = httpx.post(f"{api.url}/v1/auth/refresh", json={"refresh_token": session["refresh_token"]})
    assert r.status_code == 401  # ended sessions stay ended


def test_disable_needs_an_admin_and_refuses_oneself(cli, api):
    assert failed(cli("user", "disable", "viewer", role="operator")) == (
        "Error: permission denied: role operator lacks user:manage\n"
    )
    assert "you cannot disable yourself" in failed(cli("user", "disable", "admin"))
    assert failed(cli("user", "disable", "nobody")) == (
        "Error: user \"nobody\" not found; run 'otherix user list' to see the users\n"
    )

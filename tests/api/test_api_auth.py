"""Authentication and users (contract 1.2): login, rotating refresh tokens with
reuse detection, logout, access-token expiry, API tokens, the bootstrap admin,
the login rate limit and the users endpoints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from apihelpers import ROLE_PASSWORD, ROLES, assert_error, http, insert_vm, serve, user_id

from otherix.api.bootstrap import bootstrap_admin_from_env
from otherix.config import ConfigError
from support.clock import FakeClock
from support.server import ADMIN

pytestmark = pytest.mark.security

BAD_CREDENTIALS = "invalid username or password"


def login(api, username: str = ADMIN[0], password: str = ADMIN[1]):
    with http(api, None) as c:
        return c.post("/v1/auth/login", json={"username": username, "password": password})


def refresh(api, token: str):
    with http(api, None) as c:
        return c.post("/v1/auth/refresh", json={"refresh_token": token})


def me(api, token: str):
    with http(api, token=token) as c:
        return c.get("/v1/users/me")


def fake_clock(api) -> FakeClock:
    clock = FakeClock(datetime.now(UTC))
    api.server.set_clock(clock)
    return clock


# login --------------------------------------------------------------------------------


def test_login_returns_a_token_pair_and_the_user(shared_api):
    r = login(shared_api)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in", "user"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["user"]["username"] == "admin"
    assert body["user"]["role"] == "admin"
    assert set(body["user"]) == {
        "id",
        "username",
        "role",
        "disabled_at",
        "created_at",
        "updated_at",
    }
    assert body["user"]["disabled_at"] is None
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert set(claims) == {"sub", "role", "iat", "exp", "sid", "sep"}
    assert claims["sub"] == body["user"]["id"]
    assert claims["exp"] - claims["iat"] == 900
    assert me(shared_api, body["access_token"]).json()["username"] == "admin"


def test_login_is_case_insensitive_on_the_username(shared_api):
    assert login(shared_api, "ADMIN").status_code == 200


def test_wrong_password_and_unknown_user_look_the_same(shared_api):
    wrong = login(shared_api, "admin", "not-the-password")
    unknown = login(shared_api, "nobody-here", "not-the-password")
    for r in (wrong, unknown):
        assert_error(r, 401, "invalid_credentials", BAD_CREDENTIALS, None)
    assert wrong.content == unknown.content


@pytest.mark.parametrize(
    "body", [{}, {"username": "", "password": "x"}, {"username": "admin"}, {"password": "x"}]
)
def test_login_body_is_validated(shared_api, body):
    with http(shared_api, None) as c:
        r = c.post("/v1/auth/login", json=body)
    assert_error(r, 400, "validation_failed", "invalid request")


# refresh rotation ---------------------------------------------------------------------------


def test_refresh_rotates_and_a_reused_token_burns_the_family(shared_api):
    first = login(shared_api).json()
    second = refresh(shared_api, first["refresh_token"])
    assert second.status_code == 200
    pair = second.json()
    assert pair["refresh_token"] != first["refresh_token"]
    assert me(shared_api, pair["access_token"]).status_code == 200

    reused = refresh(shared_api, first["refresh_token"])
    assert_error(
        reused,
        401,
        "token_revoked",
        "refresh token was already used; all sessions of this login ended",
        None,
    )
    newest = refresh(shared_api, pair["refresh_token"])
    assert_error(newest, 401, "token_revoked", "refresh token has been revoked", None)


def test_reuse_burns_only_its_own_family(shared_api):
    a, b = login(shared_api).json(), login(shared_api).json()
    assert refresh(shared_api, a["refresh_token"]).status_code == 200
    assert refresh(shared_api, a["refresh_token"]).status_code == 401
    assert refresh(shared_api, b["refresh_token"]).status_code == 200


@pytest.mark.parametrize("token", ["garbage", "otx_not-a-refresh-token", "x" * 512])
def test_unknown_refresh_token_is_401(shared_api, token):
    assert_error(refresh(shared_api, token), 401, "unauthenticated", "invalid refresh token", None)


def test_refresh_token_expires_after_30_days(api):
    clock = fake_clock(api)
    pair = login(api).json()
    clock.advance(30 * 86400 + 1)
    assert_error(
        refresh(api, pair["refresh_token"]), 401, "unauthenticated", "refresh token expired", None
    )


def test_a_role_change_ends_the_session_and_the_next_login_has_the_new_role(api):
    # Issue 13.4: a role change ends every session (the next refresh is 401 too);
    # tests/security/test_security_sessions.py covers every credential change.
    pair = login(api, "viewer", ROLE_PASSWORD).json()
    with http(api) as c:
        r = c.patch(f"/v1/users/{pair['user']['id']}", json={"role": "operator"})
    assert r.status_code == 200
    assert r.json()["role"] == "operator"
    assert me(api, pair["access_token"]).json()["error"]["code"] == "token_revoked"
    assert refresh(api, pair["refresh_token"]).json()["error"]["code"] == "token_revoked"
    fresh = login(api, "viewer", ROLE_PASSWORD).json()
    with http(api, token=fresh["access_token"]) as c:
        assert c.get("/v1/users").status_code == 200


# logout ----------------------------------------------------------------------------------


def test_logout_revokes_the_refresh_token(shared_api):
    pair = login(shared_api).json()
    with http(shared_api, token=pair["access_token"]) as c:
        r = c.post("/v1/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert r.status_code == 204
    assert r.content == b""
    assert_error(
        refresh(shared_api, pair["refresh_token"]),
        401,
        "token_revoked",
        "refresh token has been revoked",
    )


def test_logout_all_sessions_revokes_every_refresh_token(shared_api):
    a = login(shared_api, "operator", ROLE_PASSWORD).json()
    b = login(shared_api, "operator", ROLE_PASSWORD).json()
    other = login(shared_api, "developer", ROLE_PASSWORD).json()
    with http(shared_api, token=a["access_token"]) as c:
        assert c.post("/v1/auth/logout", json={"all_sessions": True}).status_code == 204
    for pair in (a, b):
        assert refresh(shared_api, pair["refresh_token"]).status_code == 401
    assert refresh(shared_api, other["refresh_token"]).status_code == 200


def test_logout_cannot_revoke_someone_elses_refresh_token(shared_api):
    victim = login(shared_api, "developer", ROLE_PASSWORD).json()
    with http(shared_api, "viewer") as c:
        r = c.post("/v1/auth/logout", json={"refresh_token": victim["refresh_token"]})
    assert r.status_code == 204
    assert refresh(shared_api, victim["refresh_token"]).status_code == 200


def test_logout_needs_authentication(shared_api):
    with http(shared_api, None) as c:
        r = c.post("/v1/auth/logout", json={})
    assert_error(
        r, 401, "unauthenticated", "missing or malformed Authorization: Bearer header", None
    )


# access tokens ---------------------------------------------------------------------------


def test_access_token_expires_after_15_minutes(api):
    clock = fake_clock(api)
    pair = login(api).json()
    clock.advance(15 * 60 - 1)
    assert me(api, pair["access_token"]).status_code == 200
    clock.advance(1)
    assert_error(
        me(api, pair["access_token"]),
        401,
        "unauthenticated",
        "access token has expired; refresh or log in again",
        None,
    )
    fresh = refresh(api, pair["refresh_token"])
    assert fresh.status_code == 200
    assert me(api, fresh.json()["access_token"]).status_code == 200


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing or malformed Authorization: Bearer header"),
        ("Bearer", "missing or malformed Authorization: Bearer header"),
        ("Basic YWRtaW46eA==", "missing or malformed Authorization: Bearer header"),
        ("Bearer garbage", "invalid access token"),
        ("Bearer a.b.c", "invalid access token"),
        ("Bearer otx_unknown", "invalid API token"),
    ],
)
def test_bad_credentials_are_401(shared_api, header, message):
    headers = {"Authorization": header} if header else {}
    with http(shared_api, None) as c:
        r = c.get("/v1/users/me", headers=headers)
    assert_error(r, 401, "unauthenticated", message, None)


def test_forged_tokens_are_401(shared_api):
    now = int(datetime.now(UTC).timestamp())
    admin = me(shared_api, shared_api.tokens["admin"]).json()
    claims = {"sub": admin["id"], "role": "admin", "iat": now, "exp": now + 60}
    other_key = jwt.encode(claims, "x" * 48, algorithm="HS256")
    unsigned = jwt.encode(claims, "", algorithm="none")  # PyJWT: "" is no key for "none"
    secret = shared_api.server.deps.jwt_secret
    bad_role = jwt.encode({**claims, "role": "root"}, secret, algorithm="HS256")
    no_exp = jwt.encode({"sub": admin["id"], "role": "admin", "iat": now}, secret, "HS256")
    for token in (other_key, unsigned, bad_role, no_exp):
        assert_error(me(shared_api, token), 401, "unauthenticated", "invalid access token", None)


def test_a_deleted_users_token_stops_working(shared_api):
    with http(shared_api) as c:
        created = c.post("/v1/users", json={"username": "short-lived", "password": "password-1"})
        token = login(shared_api, "short-lived", "password-1").json()["access_token"]
        assert me(shared_api, token).status_code == 200
        assert c.delete(f"/v1/users/{created.json()['id']}").status_code == 204
    assert_error(me(shared_api, token), 401, "unauthenticated", "user no longer exists", None)


# API tokens ------------------------------------------------------------------------------


def test_api_token_is_shown_once_and_works(shared_api):
    with http(shared_api, "developer") as c:
        r = c.post("/v1/users/me/api-tokens", json={"name": "ci"})
        assert r.status_code == 201
        created = r.json()
        listed = c.get("/v1/users/me/api-tokens").json()
    token = created["token"]
    assert token.startswith("otx_")
    assert len(token) > 40
    assert created["prefix"] == token[:8]
    assert created["name"] == "ci"
    assert created["user_id"] == user_id(shared_api, "developer")
    assert created["last_used_at"] is None
    assert created["revoked_at"] is None
    assert created["expires_at"] is None
    assert listed["meta"] == {"next_cursor": None}
    entry = next(t for t in listed["data"] if t["id"] == created["id"])
    assert "token" not in entry
    assert token not in str(listed)
    assert set(entry) == {
        "id",
        "user_id",
        "name",
        "prefix",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "created_at",
    }

    whoami = me(shared_api, token)
    assert whoami.status_code == 200
    assert whoami.json()["username"] == "developer"
    with http(shared_api, "developer") as c:
        used = next(
            t for t in c.get("/v1/users/me/api-tokens").json()["data"] if t["id"] == entry["id"]
        )
    assert used["last_used_at"] is not None


def test_revoked_api_token_is_401_token_revoked(shared_api):
    with http(shared_api, "viewer") as c:
        created = c.post("/v1/users/me/api-tokens", json={"name": "revoke-me"}).json()
        assert me(shared_api, created["token"]).status_code == 200
        r = c.delete(f"/v1/users/me/api-tokens/{created['id']}")
        assert r.status_code == 204
        active = c.get("/v1/users/me/api-tokens").json()["data"]
        everything = c.get("/v1/users/me/api-tokens", params={"include_revoked": True}).json()
    assert created["id"] not in [t["id"] for t in active]
    revoked = next(t for t in everything["data"] if t["id"] == created["id"])
    assert revoked["revoked_at"] is not None
    assert_error(
        me(shared_api, created["token"]), 401, "token_revoked", "API token has been revoked", None
    )


def test_expired_api_token_is_401(api):
    clock = fake_clock(api)
    expires = clock.now() + timedelta(hours=1)
    with http(api, "operator") as c:
        r = c.post(
            "/v1/users/me/api-tokens", json={"name": "1h", "expires_at": expires.isoformat()}
        )
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert me(api, token).status_code == 200
    clock.advance(3600)
    assert_error(me(api, token), 401, "unauthenticated", "API token has expired", None)


@pytest.mark.parametrize(
    ("expires_at", "message"),
    [
        ("2001-01-01T00:00:00Z", "expires_at must be in the future"),
        ("2099-01-01T00:00:00", None),  # no timezone: ambiguous, refused
        ("tomorrow", None),
    ],
)
def test_api_token_expiry_is_validated(shared_api, expires_at, message):
    with http(shared_api, "viewer") as c:
        r = c.post("/v1/users/me/api-tokens", json={"name": "x", "expires_at": expires_at})
    err = assert_error(r, 400, "validation_failed", message)
    if message is None:
        assert err["details"]["fields"][0]["field"] == "expires_at"


@pytest.mark.parametrize("name", ["", "n" * 101])
def test_api_token_name_is_1_to_100_characters(shared_api, name):
    with http(shared_api, "viewer") as c:
        r = c.post("/v1/users/me/api-tokens", json={"name": name})
    assert_error(r, 400, "validation_failed", "invalid request")


def test_non_admin_cannot_see_another_users_tokens(shared_api):
    admin_id, viewer_id = user_id(shared_api, "admin"), user_id(shared_api, "viewer")
    with http(shared_api) as c:
        admin_token = c.post("/v1/users/me/api-tokens", json={"name": "admin-own"}).json()
    for role in ("operator", "developer", "viewer"):
        with http(shared_api, role) as c:
            listing = c.get(f"/v1/users/{admin_id}/api-tokens")
            create = c.post(f"/v1/users/{admin_id}/api-tokens", json={"name": "sneaky"})
            revoke = c.delete(f"/v1/users/{admin_id}/api-tokens/{admin_token['id']}")
            revoke_as_own = c.delete(f"/v1/users/me/api-tokens/{admin_token['id']}")
        others = f'user "{admin_id}" not found; you can manage only your own tokens (--user me)'
        assert_error(listing, 404, "not_found", others, None)
        assert_error(create, 404, "not_found", others, None)
        assert_error(revoke, 404, "not_found", others, None)
        not_own = (
            f'API token "{admin_token["id"]}" not found; '
            "run 'otherix token list' to see the API tokens"
        )
        assert_error(revoke_as_own, 404, "not_found", not_own, None)
    assert me(shared_api, admin_token["token"]).status_code == 200
    with http(shared_api, "viewer") as c:
        assert c.get(f"/v1/users/{viewer_id}/api-tokens").status_code == 200  # own id


def test_admin_manages_anyones_tokens(shared_api):
    viewer_id = user_id(shared_api, "viewer")
    with http(shared_api) as c:
        r = c.post(f"/v1/users/{viewer_id}/api-tokens", json={"name": "issued-by-admin"})
        assert r.status_code == 201
        assert r.json()["user_id"] == viewer_id
        listed = c.get(f"/v1/users/{viewer_id}/api-tokens").json()["data"]
        assert r.json()["id"] in [t["id"] for t in listed]
        assert c.delete(f"/v1/users/{viewer_id}/api-tokens/{r.json()['id']}").status_code == 204
        missing = c.get(f"/v1/users/{'0' * 8}-0000-0000-0000-{'0' * 12}/api-tokens")
    assert me(shared_api, r.json()["token"]).status_code == 401
    zero = f"{'0' * 8}-0000-0000-0000-{'0' * 12}"
    message = f"user \"{zero}\" not found; run 'otherix user list' to see the users"
    assert_error(missing, 404, "not_found", message, None)


# bootstrap admin ---------------------------------------------------------------------------

U, P = "OTHERIX_BOOTSTRAP_ADMIN_USERNAME", "OTHERIX_BOOTSTRAP_ADMIN_PASSWORD"


def test_bootstrap_admin_needs_both_or_neither():
    assert bootstrap_admin_from_env({}) is None
    assert bootstrap_admin_from_env({U: "", P: ""}) is None
    assert bootstrap_admin_from_env({U: "root", P: "long-enough"}) == ("root", "long-enough")
    for env in ({U: "root"}, {P: "long-enough"}, {U: "root", P: ""}):
        with pytest.raises(ConfigError, match="set both"):
            bootstrap_admin_from_env(env)
    with pytest.raises(ConfigError, match="at least 8"):
        bootstrap_admin_from_env({U: "root", P: "short"})


def test_bootstrap_admin_is_created_once(shared_api):
    users = shared_api.server.services.user_service
    assert users.ensure_bootstrap_admin("boot-admin", "boot-password") is True
    assert users.ensure_bootstrap_admin("BOOT-ADMIN", "other-password") is False
    body = login(shared_api, "boot-admin", "boot-password").json()
    assert body["user"]["role"] == "admin"


# login rate limit ----------------------------------------------------------------------------


def test_failed_logins_are_rate_limited(tmp_path):
    with serve(tmp_path, roles=False, **{"auth.login_rate_per_minute": 3}) as api:
        api.server.services.user_service.ensure_bootstrap_admin(*ADMIN)
        for _ in range(3):
            assert login(api, "admin", "wrong-password").status_code == 401
        for password in ("wrong-password", ADMIN[1]):
            assert_error(
                login(api, "admin", password),
                429,
                "rate_limited",
                "too many failed login attempts; retry in a minute",
                {"retry_after_seconds": 60},
            )
        assert login(api, "someone-else", "x").status_code == 401  # per username


def test_a_successful_login_resets_the_failure_count(tmp_path):
    with serve(tmp_path, roles=False, **{"auth.login_rate_per_minute": 3}) as api:
        api.server.services.user_service.ensure_bootstrap_admin(*ADMIN)
        for _ in range(2):
            assert login(api, "admin", "wrong-password").status_code == 401
        assert login(api).status_code == 200
        for _ in range(2):
            assert login(api, "admin", "wrong-password").status_code == 401
        assert login(api).status_code == 200


# users -------------------------------------------------------------------------------------


def test_admin_creates_lists_and_deletes_users(shared_api):
    with http(shared_api) as c:
        r = c.post(
            "/v1/users", json={"username": "Carol", "password": "carol-pass", "role": "developer"}
        )
        assert r.status_code == 201
        carol = r.json()
        assert carol["username"] == "Carol"
        assert carol["role"] == "developer"
        assert set(carol) == {"id", "username", "role", "disabled_at", "created_at", "updated_at"}
        dup = c.post("/v1/users", json={"username": "carol", "password": "carol-pass"})
        assert_error(dup, 409, "conflict", "user 'carol' already exists", {"field": "username"})
        names = [u["username"] for u in c.get("/v1/users").json()["data"]]
        assert "Carol" in names
        assert "admin" in names
        assert c.get(f"/v1/users/{carol['id']}").json() == carol
        assert c.delete(f"/v1/users/{carol['id']}").status_code == 204
        gone = f"user \"{carol['id']}\" not found; run 'otherix user list' to see the users"
        assert_error(c.get(f"/v1/users/{carol['id']}"), 404, "not_found", gone, None)
        assert_error(c.delete(f"/v1/users/{carol['id']}"), 404, "not_found", gone)


def test_new_users_default_to_viewer(shared_api):
    with http(shared_api) as c:
        r = c.post("/v1/users", json={"username": "dana", "password": "dana-pass"})
    assert r.status_code == 201
    assert r.json()["role"] == "viewer"


def test_admin_cannot_delete_itself(shared_api):
    with http(shared_api) as c:
        r = c.delete(f"/v1/users/{user_id(shared_api, 'admin')}")
    assert_error(r, 400, "validation_failed", "you cannot delete yourself", {"field": "id"})


@pytest.mark.parametrize("role", ["operator", "developer", "viewer"])
def test_only_admin_creates_and_deletes_users(shared_api, role):
    with http(shared_api, role) as c:
        create = c.post("/v1/users", json={"username": f"by-{role}", "password": "password-1"})
        delete = c.delete(f"/v1/users/{user_id(shared_api, 'viewer')}")
    assert_error(create, 403, "permission_denied", details={"required": "user:manage"})
    assert_error(delete, 403, "permission_denied", details={"required": "user:manage"})


def test_operators_can_list_users_but_developers_cannot(shared_api):
    with http(shared_api, "operator") as c:
        assert c.get("/v1/users").status_code == 200
    with http(shared_api, "developer") as c:
        r = c.get("/v1/users")
    assert_error(r, 403, "permission_denied", details={"required": "user:read"})


@pytest.mark.parametrize("role", ROLES)
def test_users_me_works_for_every_role(shared_api, role):
    with http(shared_api, role) as c:
        r = c.get("/v1/users/me")
    assert r.status_code == 200
    assert r.json()["username"] == role
    assert r.json()["role"] == role


@pytest.mark.parametrize(
    "body",
    [
        {"username": "has space", "password": "password-1"},
        {"username": "x", "password": "short"},
        {"username": "x", "password": "password-1", "role": "root"},
        {"username": "", "password": "password-1"},
    ],
)
def test_user_create_is_validated(shared_api, body):
    with http(shared_api) as c:
        r = c.post("/v1/users", json=body)
    assert_error(r, 400, "validation_failed", "invalid request")


def test_deleting_a_user_who_owns_vms_is_409_user_has_resources(api):
    with http(api) as c:
        frank = c.post("/v1/users", json={"username": "frank", "password": "frank-pass"}).json()
    insert_vm(api, owner="frank")
    insert_vm(api, owner="frank")
    with http(api) as c:
        r = c.delete(f"/v1/users/{frank['id']}")
        assert_error(
            r,
            409,
            "user_has_resources",
            "user still owns resources; delete them first",
            {"blocking_resources": {"vms": 2}},
        )
        assert c.get(f"/v1/users/{frank['id']}").status_code == 200


@pytest.mark.parametrize("value", [0, 1, "yes", "off", 1.0])
def test_logout_all_sessions_must_be_a_json_boolean(shared_api, value):
    """A lax bool would read "off" as False and "yes" as True: ask, don't guess."""
    with http(shared_api, "viewer") as c:
        r = c.post("/v1/auth/logout", json={"all_sessions": value})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "validation_failed"

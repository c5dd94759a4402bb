"""Self-service and start-up validation added after the first review."""

from __future__ import annotations

import pytest

from otherix.api.settings import ApiSettings
from otherix.config import ConfigError, load_config


@pytest.mark.security
def test_a_user_changes_their_own_password_and_nothing_else(api):
    with api.client("viewer") as c:
        r = c.patch("/v1/users/me", json={"password": "brand-new-pass-1"})
        assert r.status_code == 200
        assert r.json()["role"] == "viewer"
        r = c.patch("/v1/users/me", json={"password": "brand-new-pass-2", "role": "admin"})
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "permission_denied"
        assert r.json()["error"]["details"] == {"forbidden_fields": ["role"]}
    with api.client(None) as anon:
        ok = anon.post(
            "/v1/auth/login", json={"username": "viewer", "password": "brand-new-pass-1"}
        )
        assert ok.status_code == 200
        assert ok.json()["user"]["role"] == "viewer"
        old = anon.post(
            "/v1/auth/login", json={"username": "viewer", "password": "role-password-1"}
        )
        assert old.status_code == 401


def test_idempotency_key_covers_the_query_string(api):
    with api.client("admin") as c:
        first = c.post("/v1/nodes/n1/cordon?x=1", headers={"Idempotency-Key": "q-1"})
        second = c.post("/v1/nodes/n1/cordon?x=2", headers={"Idempotency-Key": "q-1"})
    assert first.status_code == 404  # no such node: answered and remembered
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "idempotency_key_mismatch"


@pytest.mark.parametrize("name", ["bad name", "-x", "é", "a/b"])
def test_an_invalid_default_pool_name_stops_the_start(name):
    with pytest.raises(ConfigError, match=r"storage_pools\.default_pool_name"):
        load_config(ApiSettings, overrides={"storage_pools.default_pool_name": name})


def test_an_empty_default_pool_name_opts_out():
    settings = load_config(ApiSettings, overrides={"storage_pools.default_pool_name": ""})
    assert settings.storage_pools.default_pool_name == ""

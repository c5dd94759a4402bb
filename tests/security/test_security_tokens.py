"""Dead credentials are refused everywhere: every operation of the live schema
that needs credentials, called with each kind of credential that must not work.

``tests/api/test_api_auth.py`` checks each rule on one route (``/v1/users/me``)
with a fake clock; this walks all of them, with tokens minted the way an
attacker would: signed with the server's own key but expired (real clock), at
the expiry second, unsigned, for a deleted user; a revoked API token; and
secrets of the wrong kind (a refresh token, a join token) used as a bearer.
"""

from __future__ import annotations

import time
from collections import Counter

import httpx
import jwt
import pytest
from securityhelpers import PUBLIC, call, fill, join_node, operations

pytestmark = pytest.mark.security

REFUSED_CODES = {"unauthenticated", "token_revoked"}


def _login(url: str, username: str, password: str) -> dict:
    r = httpx.post(f"{url}/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return r.json()


def dead_credentials(api) -> dict[str, str]:
    """name -> a bearer value that must be refused on every non-public route."""
    url, secret = api.url, api.server.deps.jwt_secret
    now = int(time.time())
    with api.client("admin") as admin:
        me = admin.get("/v1/users/me").json()
        # a user who logs in, then is deleted
        r = admin.post("/v1/users", json={"username": "gone-user", "password": "gone-pass-1"})
        assert r.status_code == 201, r.text
        gone = _login(url, "gone-user", "gone-pass-1")
        assert admin.delete(f"/v1/users/{r.json()['id']}").status_code == 204
        # an API token, revoked
        token = admin.post("/v1/users/me/api-tokens", json={"name": "revoked"}).json()
        assert admin.delete(f"/v1/users/me/api-tokens/{token['id']}").status_code == 204
        join_token = admin.post("/v1/nodes/join-tokens", json={}).json()["token"]
    claims = {"sub": me["id"], "role": "admin"}
    return {
        "JWT signed with the server's key, expired a minute ago": jwt.encode(
            {**claims, "iat": now - 960, "exp": now - 60}, secret, "HS256"
        ),
        "JWT signed with the server's key, expiring this second": jwt.encode(
            {**claims, "iat": now - 900, "exp": now}, secret, "HS256"
        ),
        "JWT with alg none": jwt.encode({**claims, "iat": now, "exp": now + 600}, "", "none"),
        "JWT signed with another key": jwt.encode(
            {**claims, "iat": now, "exp": now + 600}, "k" * 48, "HS256"
        ),
        "JWT of a deleted user": gone["access_token"],
        "revoked API token": token["token"],
        "refresh token used as a bearer": _login(url, "operator", "role-password-1")[
            "refresh_token"
        ],
        "join token used as a bearer": join_token,
    }


@pytest.mark.slow
def test_dead_credentials_are_refused_on_every_guarded_operation(api, reliability):
    join_node(api.url, api.tokens["admin"], "walk-node")  # agent routes: a real node name too
    ops = [op for op in operations(api.url) if op.operation_id not in PUBLIC]
    assert len(ops) >= 35, ops
    creds = dead_credentials(api)
    codes: Counter[str] = Counter()
    accepted: list[tuple[str, str, str, int]] = []
    for kind, token in creds.items():
        with httpx.Client(
            base_url=api.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as c:
            for op in ops:
                for path in {fill(op.path), fill(op.path, name="walk-node", user_ref="me")}:
                    r = call(c, op, path)
                    if r.status_code != 401:
                        accepted.append((kind, op.method, path, r.status_code))
                        continue
                    err = r.json()["error"]
                    assert err["code"] in REFUSED_CODES, (kind, op, err)
                    codes[err["code"]] += 1
    sent = sum(codes.values()) + len(accepted)
    reliability.record(
        "dead credentials x every guarded operation",
        injected=sent,
        survived=sum(codes.values()),
        checked=len(ops) * len(creds),
        lost=len(accepted),
        detail=f"{len(creds)} kinds of dead credential x {len(ops)} operations of the live "
        f"schema, item routes twice (random ids, real names)",
    )
    assert not accepted, accepted
    assert codes["token_revoked"] > 0  # the revoked API token says so

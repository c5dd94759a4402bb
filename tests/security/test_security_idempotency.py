"""Idempotency-Key replays only to the user who made the first request, and only
while that user may still make it; stored answers hold no secret.

An attacker who has seen (or guesses) a key and a body, or a user whose
credential has gone bad since, repeats a request that was answered 201:

- with the API token that made it, revoked since;
- with the JWT of a user deleted since;
- as another user, with the same key and body: with the permission (the
  request runs for them, as theirs) and without it (403);
- as the same user, whose role was downgraded to viewer since (with their API
  token, whose role is read from the store, and with a fresh login).

None may get the stored answer. The replay of an API-token create and of a
join-token create to their rightful owner returns the object without its
secret (``null``, ``Idempotent-Replay-Withheld``), and no secret is in the
``idempotency_keys`` table or anywhere in the database files. Join-token
creation is covered by keys (a replay mints nothing); node join, a public
route, ignores them. The CLI, given a replay, says what happened and exits 1.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from otherix.cli.context import CliContext
from otherix.cli.main import cli
from otherix.client.api import ApiClient
from otherix.store.tx import sql

pytestmark = pytest.mark.security

SECRET = re.compile(rb"otx[a-z]*_[A-Za-z0-9_-]{32,}")


def _client(api, token: str) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _login(api, username: str, password: str) -> str:
    r = httpx.post(f"{api.url}/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _user(api, role: str) -> tuple[str, str, str]:
    """(id, username, JWT) of a new user with ``role``."""
    name, password = f"u-{uuid.uuid4().hex[:8]}", "user-password-1"
    with api.client("admin") as admin:
        r = admin.post("/v1/users", json={"username": name, "password": password, "role": role})
        assert r.status_code == 201, r.text
    return r.json()["id"], name, _login(api, name, password)


def _api_token(api, jwt: str, name: str) -> dict:
    with _client(api, jwt) as c:
        r = c.post("/v1/users/me/api-tokens", json={"name": name})
    assert r.status_code == 201, r.text
    return r.json()


def _node(api) -> str:
    name = f"idem-{uuid.uuid4().hex[:6]}"
    with api.client("admin") as admin:
        token = admin.post("/v1/nodes/join-tokens", json={}).json()["token"]
        r = admin.post("/v1/nodes/join", json={"join_token": token, "name": name})
    assert r.status_code == 201, r.text
    return name


def _pool(node: str) -> dict:
    name = f"p-{uuid.uuid4().hex[:8]}"
    return {
        "node": node,
        "name": name,
        "type": "local_dir",
        "path": f"/var/lib/otherix/pools/{name}",
    }


def _keyed(c: httpx.Client, path: str, body: dict, key: str) -> httpx.Response:
    return c.post(path, json=body, headers={"Idempotency-Key": key})


def test_a_key_replays_only_to_its_user_while_they_may_make_the_request(api, reliability):
    node = _node(api)
    attempts: list[tuple[str, httpx.Response, str]] = []  # (who, answer, stored id)

    # 1. the API token that made the request, revoked since
    admin_token = _api_token(api, api.tokens["admin"], "soon-revoked")
    body, key = _pool(node), f"k-{uuid.uuid4()}"
    with _client(api, admin_token["token"]) as c:
        first = _keyed(c, "/v1/storage-pools", body, key)
    assert first.status_code == 201, first.text
    with api.client("admin") as admin:
        r = admin.delete(f"/v1/users/me/api-tokens/{admin_token['id']}")
        assert r.status_code == 204
    with _client(api, admin_token["token"]) as c:
        attempts.append(("revoked API token", _keyed(c, "/v1/storage-pools", body, key), ""))

    # 2. a deleted user's JWT (an API-token create: every role may make one)
    uid, _, jwt = _user(api, "developer")
    tkey = f"k-{uuid.uuid4()}"
    with _client(api, jwt) as c:
        made = _keyed(c, "/v1/users/me/api-tokens", {"name": "mine"}, tkey)
    assert made.status_code == 201, made.text
    with api.client("admin") as admin:
        assert admin.delete(f"/v1/users/{uid}").status_code == 204
    with _client(api, jwt) as c:
        attempts.append(
            ("deleted user", _keyed(c, "/v1/users/me/api-tokens", {"name": "mine"}, tkey), "")
        )

    # 3. another user, same key and body: without the permission, and with it
    with api.client("viewer") as c:
        attempts.append(("another user, a viewer", _keyed(c, "/v1/storage-pools", body, key), ""))
    _, _, other_jwt = _user(api, "developer")
    with _client(api, other_jwt) as c:
        theirs = _keyed(c, "/v1/users/me/api-tokens", {"name": "mine"}, tkey)
    stolen = made.json()["id"]
    attempts.append(("another user with the permission", theirs, stolen))

    # 4. the same user, downgraded to viewer since
    did, dname, djwt = _user(api, "admin")
    dtoken = _api_token(api, djwt, "downgraded")["token"]
    dbody, dkey = _pool(node), f"k-{uuid.uuid4()}"
    with _client(api, dtoken) as c:
        assert _keyed(c, "/v1/storage-pools", dbody, dkey).status_code == 201
    with api.client("admin") as admin:
        assert admin.patch(f"/v1/users/{did}", json={"role": "viewer"}).status_code == 200
    with _client(api, dtoken) as c:
        attempts.append(("downgraded, API token", _keyed(c, "/v1/storage-pools", dbody, dkey), ""))
    with _client(api, _login(api, dname, "user-password-1")) as c:
        attempts.append(("downgraded, new login", _keyed(c, "/v1/storage-pools", dbody, dkey), ""))

    expected = {
        "revoked API token": 401,
        "deleted user": 401,
        "another user, a viewer": 403,
        "another user with the permission": 201,
        "downgraded, API token": 403,
        "downgraded, new login": 403,
    }
    came_through = [
        who
        for who, r, stolen_id in attempts
        if r.headers.get("idempotent-replay") or (stolen_id and r.json().get("id") == stolen_id)
    ]
    wrong = {who: r.status_code for who, r, _ in attempts if r.status_code != expected[who]}
    reliability.record(
        "Idempotency-Key replay by a caller who may not have it",
        injected=len(attempts),
        survived=len(attempts) - len(came_through),
        checked=len(attempts),
        lost=len(came_through),
        detail="revoked token, deleted user, other users with and without the permission, "
        "role downgraded (API token and new login)",
    )
    assert not came_through, came_through
    assert not wrong, wrong
    assert theirs.json()["token"].startswith("otx_")  # ran for them: their own new token


def _database_bytes(api) -> bytes:
    db = Path(api.server.settings.data_dir) / "otherix.db"
    return b"".join(p.read_bytes() for p in db.parent.glob("otherix.db*"))


def test_replays_of_secret_bearing_creates_withhold_the_secret(api, reliability):
    key, jkey = f"k-{uuid.uuid4()}", f"k-{uuid.uuid4()}"
    with api.client("admin") as c:
        first = _keyed(c, "/v1/users/me/api-tokens", {"name": "ci"}, key)
        again = _keyed(c, "/v1/users/me/api-tokens", {"name": "ci"}, key)
        jfirst = _keyed(c, "/v1/nodes/join-tokens", {"description": "rack"}, jkey)
        jagain = _keyed(c, "/v1/nodes/join-tokens", {"description": "rack"}, jkey)
        join_tokens = [
            t for t in c.get("/v1/nodes/join-tokens").json()["data"] if t["description"] == "rack"
        ]
        tokens = [t for t in c.get("/v1/users/me/api-tokens").json()["data"] if t["name"] == "ci"]
    secrets = [first.json()["token"], jfirst.json()["token"]]
    for a, b in ((first, again), (jfirst, jagain)):
        assert a.status_code == b.status_code == 201
        assert b.headers["idempotent-replay"] == "true"
        assert b.headers["idempotent-replay-withheld"] == "token"
        assert b.json()["token"] is None
        assert {k: v for k, v in b.json().items() if k != "token"} == {
            k: v for k, v in a.json().items() if k != "token"
        }
    assert len(tokens) == len(join_tokens) == 1  # a replay mints nothing
    with api.client(None) as anon:  # the join token still works, once
        r = anon.post("/v1/nodes/join", json={"join_token": secrets[1], "name": "withheld-node"})
    assert r.status_code == 201, r.text
    with api.server.deps.db.read() as conn:
        rows = sql(conn).exec_driver_sql("SELECT body FROM idempotency_keys").fetchall()
    in_table = [bytes(row[0]) for row in rows if SECRET.search(bytes(row[0]))]
    on_disk = [s for s in secrets if s.encode() in _database_bytes(api)]
    reliability.record(
        "secrets kept by Idempotency-Key answers",
        injected=2,
        survived=2 - len(on_disk),
        checked=len(rows),
        lost=len(in_table) + len(on_disk),
        detail="API token and join token creates replayed; idempotency_keys rows and the "
        "database files searched for otx…_ secrets",
    )
    assert not in_table, in_table
    assert not on_disk


def test_node_join_a_public_route_ignores_the_key(api):
    with api.client("admin") as c:
        tokens = [c.post("/v1/nodes/join-tokens", json={}).json()["token"] for _ in range(2)]
    with api.client(None) as anon:
        joined = [
            _keyed(
                anon,
                "/v1/nodes/join",
                {"join_token": t, "name": f"n-{i}-{uuid.uuid4().hex[:4]}"},
                "same",
            )
            for i, t in enumerate(tokens)
        ]
    assert [r.status_code for r in joined] == [201, 201]  # public: two requests, two nodes
    assert "idempotent-replay" not in joined[1].headers


class _KeyedTransport(httpx.HTTPTransport):
    """What a client that retries with an Idempotency-Key sends."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["Idempotency-Key"] = self.key
        return super().handle_request(request)


def test_the_cli_says_a_replayed_token_create_has_no_secret(api, tmp_path):
    key = f"k-{uuid.uuid4()}"

    def run():
        ctx = CliContext()
        ctx.env = {"HOME": str(tmp_path)}
        ctx.client_factory = lambda url, token, timeout: ApiClient(
            url, token, timeout=timeout, transport=_KeyedTransport(key)
        )
        args = ["--endpoint", api.url, "--token", api.tokens["admin"], "token", "create", "ci"]
        return CliRunner().invoke(cli, args, obj=ctx, prog_name="otherix")

    first, again = run(), run()
    assert first.exit_code == 0, first.output
    assert re.search(r"token: otx_\S{32,}", first.stdout)
    assert again.exit_code == 1, again.output
    assert "already created by an earlier request with this Idempotency-Key" in again.stderr
    assert "otherix token revoke" in again.stderr
    assert "otx_" not in again.stdout

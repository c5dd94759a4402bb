"""Conventions every endpoint shares (contract 1.1): the error envelope, router
fallbacks, body decoding and limits, pagination parameters, health and
metrics, the 500 answer, and Idempotency-Key."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from apihelpers import assert_error, http, join_node, pool_body

from otherix import __version__
from otherix.store.idempotency import store as qi
from otherix.store.pools import store as qp
from otherix.store.ports.pools import NewPool
from otherix.store.ports.settings import CLUSTER_ID
from otherix.store.settings import store as qs
from support.clock import FakeClock

JSON_UTF8 = "application/json; charset=utf-8"
MIB = 1 << 20


@pytest.fixture(scope="module")
def node(shared_api):
    return join_node(shared_api, "basics-node")


# router fallbacks and the envelope ------------------------------------------------------


def test_unknown_route_is_404_not_found_with_the_exact_message(shared_api):
    with http(shared_api, None) as c:
        r = c.get("/v1/no-such-thing")
    assert r.headers["content-type"] == JSON_UTF8
    assert r.json() == {
        "error": {"code": "not_found", "message": "the requested resource was not found"}
    }


def test_unknown_route_under_auth_is_still_404(shared_api):
    with http(shared_api, "viewer") as c:
        r = c.delete("/v1/storage-pools/x/y/z")
    assert_error(r, 404, "not_found", "the requested resource was not found", details=None)


def test_wrong_method_is_405_method_not_allowed(shared_api):
    with http(shared_api, None) as c:
        r = c.delete("/healthz")
    assert_error(r, 405, "method_not_allowed", "method not allowed for this resource", None)
    with http(shared_api) as c:
        r = c.put("/v1/storage-pools", json={})
    assert_error(r, 405, "method_not_allowed", "method not allowed for this resource", None)


@pytest.mark.parametrize("path", ["/v1/users", "/v1/storage-pools", "/v1/nodes/join-tokens"])
def test_malformed_json_is_400(shared_api, path):
    with http(shared_api) as c:
        r = c.post(path, content=b'{"name": ', headers={"content-type": "application/json"})
    assert_error(r, 400, "validation_failed", "invalid request body: malformed JSON", None)


def test_wrong_types_name_every_field(shared_api):
    with http(shared_api) as c:
        r = c.post("/v1/users", json={"username": 5, "password": "x", "role": "root"})
    err = assert_error(r, 400, "validation_failed", "invalid request")
    fields = {f["field"]: f["reason"] for f in err["details"]["fields"]}
    assert fields == {
        "username": "Input should be a valid string",
        "password": "String should have at least 8 characters",
        "role": "Input should be 'admin', 'operator', 'developer' or 'viewer'",
    }


def test_wrong_query_type_is_400(shared_api):
    with http(shared_api, "viewer") as c:
        r = c.get("/v1/storage-pools", params={"limit": "ten"})
    err = assert_error(r, 400, "validation_failed", "invalid request")
    assert err["details"]["fields"][0]["field"] == "query.limit"


def test_unknown_fields_are_rejected(shared_api):
    with http(shared_api) as c:
        r = c.post(
            "/v1/users", json={"username": "u-extra", "password": "long-enough", "admin": True}
        )
    assert_error(
        r,
        400,
        "validation_failed",
        "invalid request",
        {"fields": [{"field": "admin", "reason": "Extra inputs are not permitted"}]},
    )


def test_unknown_field_on_a_pool_create_is_rejected(shared_api, node):
    with http(shared_api) as c:
        r = c.post("/v1/storage-pools", json=pool_body(node, "extra", colour="red"))
    assert_error(r, 400, "validation_failed", "unknown field 'colour'", {"field": "colour"})


@pytest.mark.security
def test_body_over_one_mib_is_400(shared_api):
    too_big = b'{"username": "' + b"a" * MIB + b'"}'
    with http(shared_api) as c:
        r = c.post("/v1/users", content=too_big, headers={"content-type": "application/json"})
    assert_error(
        r,
        400,
        "validation_failed",
        f"request body too large (max {MIB} bytes)",
        {"max_bytes": MIB},
    )


@pytest.mark.security
def test_streamed_body_over_one_mib_is_400(shared_api, node):
    """No Content-Length: the cap applies while the body arrives."""

    def chunks():
        yield b'{"node": "basics-node", "name": "big", "config": {"x": "'
        for _ in range(17):
            yield b"a" * 65536
        yield b'"}}'

    with http(shared_api) as c:
        r = c.post(
            "/v1/storage-pools", content=chunks(), headers={"content-type": "application/json"}
        )
    assert_error(r, 400, "validation_failed", f"request body too large (max {MIB} bytes)")


def test_body_just_under_the_cap_is_decoded(shared_api):
    body = b'{"username": "u", "password": "' + b"p" * (MIB - 100) + b'"}'
    assert len(body) < MIB
    with http(shared_api) as c:
        r = c.post("/v1/users", content=body, headers={"content-type": "application/json"})
    err = assert_error(r, 400, "validation_failed", "invalid request")
    assert err["details"]["fields"] == [
        {"field": "password", "reason": "String should have at most 1024 characters"}
    ]


# pagination parameters ------------------------------------------------------------------


@pytest.mark.parametrize(
    "cursor", ["abc", "not base64 !", "", "x" * 600, "MjAyNi0wMS0wMXxub3QtYS11dWlk"]
)
def test_invalid_cursor_is_400(shared_api, cursor):
    with http(shared_api, "viewer") as c:
        r = c.get("/v1/storage-pools", params={"cursor": cursor})
    if cursor == "":  # an empty cursor means "from the start"
        assert r.status_code == 200
        return
    assert_error(r, 400, "validation_failed", "invalid cursor", {"field": "cursor"})


@pytest.mark.parametrize("path", ["/v1/storage-pools", "/v1/nodes", "/v1/tasks"])
@pytest.mark.parametrize("limit", [0, -1])
def test_limit_below_one_is_400(shared_api, path, limit):
    with http(shared_api) as c:
        r = c.get(path, params={"limit": limit})
    assert_error(r, 400, "validation_failed", "limit must be at least 1", {"field": "limit"})


def test_limit_default_is_50_and_above_200_is_clamped(api):
    """201 pools written through the store; the API pages them."""
    node = join_node(api, "many")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with api.server.deps.db.write() as conn:
        for i in range(201):
            at = start + timedelta(seconds=i)
            qp.insert_pool(
                conn,
                NewPool(
                    id=str(uuid.uuid4()),
                    node_id=node.id,
                    name=f"p{i:03d}",
                    type="local_dir",
                    path=f"/var/lib/otherix/pools/p{i:03d}",
                    config={},
                    created_at=at,
                ),
            )
    with http(api, "viewer") as c:
        default = c.get("/v1/storage-pools").json()
        clamped = c.get("/v1/storage-pools", params={"limit": 500}).json()
        exact = c.get("/v1/storage-pools", params={"limit": 200}).json()
        rest = c.get(
            "/v1/storage-pools", params={"limit": 500, "cursor": clamped["meta"]["next_cursor"]}
        ).json()
    assert len(default["data"]) == 50
    assert default["meta"]["next_cursor"]
    assert len(clamped["data"]) == 200
    assert clamped["meta"]["next_cursor"]
    assert clamped == exact
    assert [p["name"] for p in rest["data"]] == ["p200"]
    assert rest["meta"] == {"next_cursor": None}


# health, readiness, metrics -------------------------------------------------------------


def test_healthz_reports_the_version(shared_api):
    with http(shared_api, None) as c:
        r = c.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "version": __version__}


def test_readyz_reports_the_store(shared_api):
    with http(shared_api, None) as c:
        r = c.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "store": "sqlite"}


def test_metrics_count_requests_by_route_and_status(shared_api):
    with http(shared_api, None) as c:
        c.get("/healthz")
        c.get("/v1/definitely-not-here")
        r = c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "# TYPE otherix_http_requests_total counter" in text
    assert 'otherix_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'route="<unmatched>",status="404"' in text
    assert "otherix_http_request_duration_seconds_bucket" in text


def test_request_id_is_echoed(shared_api):
    with http(shared_api, None) as c:
        r = c.get("/healthz", headers={"X-Request-ID": "trace-me-123"})
        one, two = c.get("/healthz"), c.get("/healthz")
    assert r.headers["x-request-id"] == "trace-me-123"
    assert one.headers["x-request-id"]
    assert two.headers["x-request-id"]
    assert one.headers["x-request-id"] != two.headers["x-request-id"]


# the 500 answer -----------------------------------------------------------------------


@pytest.mark.security
def test_unexpected_exception_is_500_internal_without_a_traceback(shared_api, monkeypatch):
    def boom() -> None:
        raise RuntimeError("secret detail from deep inside")

    monkeypatch.setattr(shared_api.server.services.default_pool_service, "get", boom)
    with http(shared_api, "viewer") as c:
        r = c.get("/v1/cluster/default-pool", headers={"X-Request-ID": "req-500"})
    assert r.status_code == 500
    assert r.headers["content-type"] == JSON_UTF8
    assert r.headers["x-request-id"] == "req-500"
    assert r.json() == {
        "error": {
            "code": "internal",
            "message": "internal error",
            "details": {"request_id": "req-500"},
        }
    }
    assert "secret detail" not in r.text
    assert "Traceback" not in r.text


def test_unexpected_exception_without_a_request_id_gets_a_generated_one(shared_api, monkeypatch):
    monkeypatch.setattr(shared_api.server.services.default_pool_service, "get", lambda: 1 / 0)
    with http(shared_api, "viewer") as c:
        r = c.get("/v1/cluster/default-pool")
        # the keep-alive connection survives the 500: the next request on it works
        assert c.get("/healthz").status_code == 200
    err = assert_error(r, 500, "internal", "internal error")
    assert set(err["details"]) == {"request_id"}
    assert err["details"]["request_id"] == r.headers["x-request-id"]
    assert err["details"]["request_id"] not in ("", "-")


# Idempotency-Key --------------------------------------------------------------------------


def _create(c, body, key):
    return c.post("/v1/storage-pools", json=body, headers={"Idempotency-Key": key})


def test_same_key_and_body_replays_the_same_answer(shared_api, node):
    body = pool_body(node, "idem-replay")
    with http(shared_api) as c:
        first = _create(c, body, "key-replay")
        second = _create(c, body, "key-replay")
        listed = c.get("/v1/storage-pools", params={"limit": 200}).json()["data"]
    assert first.status_code == second.status_code == 201
    assert second.json()["id"] == first.json()["id"]
    assert second.content == first.content
    assert second.headers.get("idempotent-replay") == "true"
    assert "idempotent-replay" not in first.headers
    assert [p["id"] for p in listed if p["name"] == "idem-replay"] == [first.json()["id"]]


def test_same_key_with_another_body_is_409(shared_api, node):
    with http(shared_api) as c:
        assert _create(c, pool_body(node, "idem-a"), "key-mismatch").status_code == 201
        r = _create(c, pool_body(node, "idem-b"), "key-mismatch")
    assert_error(
        r,
        409,
        "idempotency_key_mismatch",
        "Idempotency-Key was already used with a different request",
        None,
    )


def test_errors_are_replayed_too(shared_api, node):
    body = pool_body(node, "bad name")
    with http(shared_api) as c:
        first = _create(c, body, "key-error")
        second = _create(c, body, "key-error")
    assert first.status_code == second.status_code == 400
    assert first.content == second.content


def test_concurrent_requests_with_one_key_run_once(shared_api):
    """API tokens may share a name, so only the key stops a second mint: while the
    first request runs, the others get 409 (in progress) or, later, its replay."""
    name = f"idem-race-{uuid.uuid4().hex[:8]}"
    barrier = threading.Barrier(12)

    def mint(_: int):
        with http(shared_api) as c:
            barrier.wait()
            return c.post(
                "/v1/users/me/api-tokens", json={"name": name}, headers={"Idempotency-Key": name}
            )

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(mint, range(12)))
    with http(shared_api) as c:
        minted = [t for t in c.get("/v1/users/me/api-tokens").json()["data"] if t["name"] == name]
    assert len(minted) == 1
    firsts = [r for r in answers if r.status_code == 201 and "idempotent-replay" not in r.headers]
    assert len(firsts) == 1
    for r in answers:
        if r.status_code == 201:
            assert r.json()["id"] == minted[0]["id"]
        else:
            assert_error(r, 409, "conflict")
            assert r.json()["error"]["details"]["reason"] == "idempotency_key_in_progress"


def test_a_claim_left_by_a_dead_process_is_taken_over(shared_api, node):
    """On SQLite (one process), a pending claim of a request this server is running
    blocks its key; one this server abandoned (its release failed), or one made
    by an earlier process (it died before answering), is taken over at once."""
    deps = shared_api.server.deps
    with http(shared_api) as c:
        principal = f"user:{c.get('/v1/users/me').json()['id']}"
    raw = json.dumps(pool_body(node, "idem-claimed")).encode()
    request_hash = hashlib.sha256(b"POST /v1/storage-pools?\n" + raw).hexdigest()
    pk = (principal, "key-claimed")

    def create(c):
        return c.post(
            "/v1/storage-pools",
            content=raw,
            headers={"Idempotency-Key": "key-claimed", "Content-Type": "application/json"},
        )

    def claim(claimant: str) -> None:
        with deps.db.write() as conn:
            qi.delete(conn, *pk)
            qi.insert_claim(
                conn, *pk, request_hash, claimant, datetime.now(UTC) - timedelta(hours=1)
            )

    claim(deps.claims.token())
    assert deps.claims.enter(pk)  # its request is running
    try:
        with http(shared_api) as c:
            blocked = create(c)
    finally:
        deps.claims.leave(pk)
    err = assert_error(blocked, 409, "conflict")
    assert err["details"]["reason"] == "idempotency_key_in_progress"
    assert blocked.headers["retry-after"] == "1"
    statuses = []
    for claimant in (deps.claims.token(), "claimed-by:an-earlier-process:0"):
        claim(claimant)  # abandoned by this server, then left by a dead one
        with http(shared_api) as c:
            taken = create(c)
            again = create(c)
        statuses.append(taken.status_code)
        assert again.headers.get("idempotent-replay") == "true"
        assert again.content == taken.content
        with deps.db.write() as conn:
            qi.delete(conn, *pk)
    assert statuses == [201, 409], statuses  # the second run finds the pool made once


def test_key_longer_than_255_is_400(shared_api, node):
    with http(shared_api) as c:
        r = _create(c, pool_body(node, "idem-long"), "k" * 256)
        ok = _create(c, pool_body(node, "idem-255"), "k" * 255)
    assert_error(
        r, 400, "validation_failed", "Idempotency-Key must be at most 255 characters", None
    )
    assert ok.status_code == 201


@pytest.mark.security
def test_keys_are_per_user_whatever_the_credential(shared_api, node):
    """A key belongs to the user: the same user's API token replays what their
    JWT started (a client that refreshed its token in between still gets its
    answer), and another user's key of the same name is theirs alone."""
    with http(shared_api) as c:
        r = c.post("/v1/users/me/api-tokens", json={"name": "idem"})
        assert r.status_code == 201
        api_token = r.json()["token"]
        a = _create(c, pool_body(node, "idem-jwt"), "shared-key")
    with http(shared_api, token=api_token) as c:
        again = _create(c, pool_body(node, "idem-jwt"), "shared-key")
    with http(shared_api, "operator") as c:
        key = {"Idempotency-Key": "shared-key"}
        b = c.post("/v1/users/me/api-tokens", json={"name": "op"}, headers=key)
    assert a.status_code == b.status_code == again.status_code == 201
    assert again.headers.get("idempotent-replay") == "true"
    assert again.json()["id"] == a.json()["id"]
    assert "idempotent-replay" not in b.headers
    assert b.json()["token"].startswith("otx_")


def test_keys_expire_after_24_hours(api):
    node = join_node(api, "idem-clock")
    with http(api) as c:
        token = c.post("/v1/users/me/api-tokens", json={"name": "clock"}).json()["token"]
    api.server.set_clock(FakeClock(datetime.now(UTC)))
    with http(api, token=token) as c:
        assert _create(c, pool_body(node, "idem-day-1"), "daily").status_code == 201
        api.server.deps.clock.advance(24 * 3600 - 1)
        assert _create(c, pool_body(node, "idem-day-2"), "daily").status_code == 409
        api.server.deps.clock.advance(2)
        r = _create(c, pool_body(node, "idem-day-2"), "daily")
    assert r.status_code == 201, r.text


def test_get_and_exempt_routes_ignore_the_key(shared_api):
    with http(shared_api, None) as c:
        r1 = c.post(
            "/v1/auth/login",
            json={"username": "admin", "password": "wrong-password"},
            headers={"Idempotency-Key": "login"},
        )
        r2 = c.post(
            "/v1/auth/login",
            json={"username": "admin", "password": "admin-password-1"},
            headers={"Idempotency-Key": "login"},
        )
    assert r1.status_code == 401
    assert r2.status_code == 200


def test_the_cluster_id_is_made_once_and_kept_across_restarts(tmp_path):
    from otherix.api.bootstrap import open_deps
    from support.server import make_settings

    settings = make_settings(tmp_path / "api")
    first = open_deps(settings)
    first.db.close()
    second = open_deps(settings)
    try:
        uuid.UUID(first.cluster_id)
        assert second.cluster_id == first.cluster_id
        with second.db.read() as conn:
            assert qs.get_setting(conn, CLUSTER_ID) == first.cluster_id
    finally:
        second.db.close()

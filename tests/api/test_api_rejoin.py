"""Re-enrolment through the API: ``POST /v1/nodes/{name}/reset-credentials``
(admin) makes a one-time token, ``POST /v1/nodes/rejoin`` (anonymous) redeems
it for the same node. Every refusal leaves everything as it was: the old
credential still heartbeats, the node and its pools are unchanged."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta

import pytest
from apihelpers import (
    assert_error,
    create_pool,
    heartbeat,
    http,
    join_node,
    ready_node,
)

from support.clock import FakeClock

pytestmark = pytest.mark.security


def reset(api, name: str, **body) -> dict:
    with http(api) as c:
        r = c.post(f"/v1/nodes/{name}/reset-credentials", json=body or None)
    assert r.status_code == 201, r.text
    return r.json()


def rejoin(api, token: str, **body):
    with http(api, None) as anon:
        return anon.post("/v1/nodes/rejoin", json={"rejoin_token": token, **body})


def snapshot(api, name: str) -> tuple:
    """What an operator sees of a node and its pools (ids, names, status)."""
    with http(api) as c:
        node = c.get(f"/v1/nodes/{name}").json()
        pools = c.get("/v1/storage-pools", params={"node": name}).json()["data"]
    return node["id"], node["status"], sorted((p["id"], p["name"]) for p in pools)


def test_a_rejoined_node_keeps_its_id_and_pools_and_the_old_credential_stops(api):
    node = ready_node(api, "rj-node")
    pool = create_pool(api, node, "rj-pool")
    before = snapshot(api, "rj-node")
    made = reset(api, "rj-node")
    assert made["token"].startswith("otxr_")
    assert made["prefix"] == made["token"][:12]
    assert (made["node"], made["node_id"]) == ("rj-node", node.id)
    assert heartbeat(api, node).status_code == 200  # a token alone revokes nothing
    r = rejoin(api, made["token"], name="rj-node", architecture="amd64")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["node_id"], body["name"]) == (node.id, "rj-node")
    assert body["credential"].startswith("otxn_")
    assert body["credential"] != node.credential
    assert_error(
        heartbeat(api, node), 401, "unauthenticated", details={"reason": "credential_unknown"}
    )
    node = dataclasses.replace(node, credential=body["credential"])
    assert heartbeat(api, node).status_code == 200
    assert snapshot(api, "rj-node") == before
    assert pool["id"] in {p for p, _ in before[2]}


def test_the_default_lifetime_is_the_setting_and_a_ttl_can_be_asked_for(api):
    ready_node(api, "rj-ttl")
    clock = FakeClock(datetime.now(UTC))
    api.server.set_clock(clock)
    made = reset(api, "rj-ttl")
    expires = datetime.fromisoformat(made["expires_at"].replace("Z", "+00:00"))
    assert expires == clock.now() + timedelta(hours=1)
    made = reset(api, "rj-ttl", ttl_seconds=300)
    expires = datetime.fromisoformat(made["expires_at"].replace("Z", "+00:00"))
    assert expires == clock.now() + timedelta(minutes=5)
    with http(api) as c:
        for ttl in (59, 7 * 86400 + 1):
            r = c.post("/v1/nodes/rj-ttl/reset-credentials", json={"ttl_seconds": ttl})
            assert_error(r, 400, "validation_failed")
        assert_error(c.post("/v1/nodes/nosuch/reset-credentials", json={}), 404, "not_found")
    with http(api, "operator") as c:
        r = c.post("/v1/nodes/rj-ttl/reset-credentials", json={})
    assert_error(r, 403, "permission_denied", details={"required": "node:manage"})


def _refused(api, node, token: str, status: int, reason: str, **body) -> None:
    before = snapshot(api, node.name)
    r = rejoin(api, token, **body)
    err = assert_error(r, status, "unauthenticated" if status == 401 else "conflict")
    assert err["details"]["reason"] == reason, err
    assert heartbeat(api, node).status_code == 200, "the old credential must still work"
    assert snapshot(api, node.name) == before


def test_bad_tokens_change_nothing(api):
    a, b = ready_node(api, "rj-a"), ready_node(api, "rj-b")
    create_pool(api, a, "rj-a-pool")
    token_a = reset(api, "rj-a")["token"]
    _refused(api, a, "otxr_" + "x" * 43, 401, "rejoin_token_unknown")
    _refused(api, a, "not-even-a-prefix", 401, "rejoin_token_unknown")
    with http(api) as c:
        join_token = c.post("/v1/nodes/join-tokens", json={}).json()["token"]
    _refused(api, a, join_token, 401, "rejoin_token_unknown")
    # another node's name with this node's token: refused, and the token stays good
    _refused(api, a, token_a, 401, "rejoin_token_node_mismatch", name="rj-b")
    assert heartbeat(api, b).status_code == 200
    _refused(api, a, token_a, 409, "architecture_mismatch", architecture="arm64")
    # a newer token replaces an older one
    newer = reset(api, "rj-a")["token"]
    _refused(api, a, token_a, 401, "rejoin_token_unknown")
    r = rejoin(api, newer)
    assert r.status_code == 200, r.text
    a = dataclasses.replace(a, credential=r.json()["credential"])
    _refused(api, a, newer, 401, "rejoin_token_used")


def test_an_expired_token_changes_nothing(api):
    node = ready_node(api, "rj-late")
    clock = FakeClock(datetime.now(UTC))
    api.server.set_clock(clock)
    token = reset(api, "rj-late", ttl_seconds=600)["token"]
    clock.step(600)  # the wall clock decides token expiry
    _refused(api, node, token, 401, "rejoin_token_expired")


def test_a_deleted_nodes_token_is_refused(api):
    node = ready_node(api, "rj-deleted")
    token = reset(api, "rj-deleted")["token"]
    with http(api) as c:
        # the node holds the only instance of the cluster default pool
        assert c.delete("/v1/cluster/default-pool").status_code == 204
        assert c.delete("/v1/nodes/rj-deleted").status_code == 200
    r = rejoin(api, token)
    assert_error(r, 401, "unauthenticated", details={"reason": "node_deleted"})
    assert heartbeat(api, node).status_code == 401  # deleted stays deleted
    fresh = join_node(api, "rj-deleted")  # the name is free for a new node, as before
    assert fresh.id != node.id


def test_concurrent_redemptions_of_one_token_succeed_once(api_any_backend):
    api = api_any_backend
    node = ready_node(api, "rj-race")
    token = reset(api, "rj-race")["token"]
    answers: list[int] = []
    start = threading.Barrier(8)

    def redeem() -> None:
        start.wait()
        answers.append(rejoin(api, token).status_code)

    threads = [threading.Thread(target=redeem) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(answers) == [200] + [401] * 7
    assert heartbeat(api, node).status_code == 401

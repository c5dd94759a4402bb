"""Nodes as pools see them (contract 1.3, 2.1): join tokens and enrolment,
name-only addressing, full vs summary views, the agent credential on the
heartbeat, maintenance state, and soft delete."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from apihelpers import ROLES, assert_error, heartbeat, http, join_node, random_uuid, ready_node

from otherix import __version__
from otherix.domain.versions import release
from support.clock import FakeClock

SUMMARY_KEYS = {"id", "name", "status", "architecture", "created_at"}
FULL_KEYS = SUMMARY_KEYS | {
    "cordoned",
    "agent_version",
    "capabilities",
    "resources",
    "last_heartbeat_at",
    "status_changed_at",
    "desired_revision",
    "updated_at",
}


def join(api, token: str, name: str, **extra):
    with http(api, None) as c:
        return c.post("/v1/nodes/join", json={"join_token": token, "name": name, **extra})


def new_join_token(api, **body) -> dict:
    with http(api) as c:
        r = c.post("/v1/nodes/join-tokens", json=body)
    assert r.status_code == 201, r.text
    return r.json()


# join tokens and enrolment -----------------------------------------------------------------


@pytest.mark.security
def test_join_token_is_shown_once(shared_api):
    created = new_join_token(shared_api, description="rack 4")
    assert created["token"].startswith("otxj_")
    assert created["prefix"] == created["token"][:12]
    assert created["max_uses"] == 1
    assert created["uses"] == 0
    assert created["description"] == "rack 4"
    ttl = datetime.fromisoformat(created["expires_at"]) - datetime.fromisoformat(
        created["created_at"]
    )
    assert ttl.total_seconds() == 86400
    with http(shared_api) as c:
        listed = c.get("/v1/nodes/join-tokens").json()["data"]
    entry = next(t for t in listed if t["id"] == created["id"])
    assert "token" not in entry


@pytest.mark.security
def test_join_enrols_a_pending_node_and_consumes_the_token(shared_api):
    token = new_join_token(shared_api)["token"]
    r = join(shared_api, token, "Enrolled-1", architecture="arm64")
    assert r.status_code == 201
    body = r.json()
    assert body["name"] == "Enrolled-1"
    assert body["credential"].startswith("otxn_")
    assert body["heartbeat_interval_seconds"] == 30
    with http(shared_api) as c:
        node = c.get("/v1/nodes/enrolled-1").json()
    assert node["id"] == body["node_id"]
    assert node["status"] == "pending"
    assert node["architecture"] == "arm64"
    again = join(shared_api, token, "enrolled-2")
    assert_error(
        again,
        401,
        "unauthenticated",
        "join token has no uses left",
        {"reason": "join_token_exhausted"},
    )


@pytest.mark.security
def test_join_with_an_unknown_token_is_401(shared_api):
    r = join(shared_api, "otxj_nope", "never")
    assert_error(r, 401, "unauthenticated", "unknown join token", {"reason": "join_token_unknown"})


@pytest.mark.security
def test_join_with_an_expired_token_is_401(api):
    token = new_join_token(api, ttl_seconds=60)["token"]
    clock = FakeClock(datetime.now(UTC))
    api.server.set_clock(clock)
    clock.advance(60)
    r = join(api, token, "late")
    assert_error(
        r, 401, "unauthenticated", "join token has expired", {"reason": "join_token_expired"}
    )


def test_a_token_with_several_uses(shared_api):
    token = new_join_token(shared_api, max_uses=2)["token"]
    assert join(shared_api, token, "multi-1").status_code == 201
    assert join(shared_api, token, "multi-2").status_code == 201
    assert join(shared_api, token, "multi-3").status_code == 401


def test_node_names_are_unique_case_insensitively(shared_api):
    join_node(shared_api, "Unique-Node")
    r = join(shared_api, new_join_token(shared_api)["token"], "UNIQUE-node")
    assert_error(
        r, 409, "conflict", "a node named 'UNIQUE-node' is already enrolled", {"field": "name"}
    )


@pytest.mark.parametrize("name", ["-lead", "trail-", "has space", "a/b", "ü"])
def test_invalid_node_names_are_400(shared_api, name):
    r = join(shared_api, new_join_token(shared_api)["token"], name)
    err = assert_error(r, 400, "validation_failed")
    assert err["details"] == {"field": "name"}


def test_a_uuid_is_not_a_node_name(shared_api):
    uid = random_uuid()
    r = join(shared_api, new_join_token(shared_api)["token"], uid)
    expected = {
        "field": "name",
        "reason": "uuid_not_accepted_in_name_path",
        "hint": "Use 'otherix node list' to discover names.",
    }
    message = "uuid format not accepted for name-only parameter 'name'"
    assert_error(r, 400, "validation_failed", message, expected)
    with http(shared_api, "viewer") as c:
        assert_error(c.get(f"/v1/nodes/{uid}"), 400, "validation_failed", message, expected)


@pytest.mark.security
def test_join_token_admin_only_and_delete(shared_api):
    created = new_join_token(shared_api)
    for role in ("operator", "developer", "viewer"):
        with http(shared_api, role) as c:
            r = c.post("/v1/nodes/join-tokens", json={})
        assert_error(r, 403, "permission_denied", details={"required": "node:manage"})
    with http(shared_api) as c:
        assert c.delete(f"/v1/nodes/join-tokens/{created['id']}").status_code == 204
        r = c.delete(f"/v1/nodes/join-tokens/{created['id']}")
    message = (
        f'join token "{created["id"]}" not found; '
        "run 'otherix node join-token list' to see the join tokens"
    )
    assert_error(r, 404, "not_found", message, None)
    assert join(shared_api, created["token"], "after-delete").status_code == 401


# views ------------------------------------------------------------------------------------


@pytest.mark.security
@pytest.mark.parametrize("role", ROLES)
def test_node_views_depend_on_the_role(shared_api, role):
    ready_node(shared_api, f"view-{role}")
    with http(shared_api, role) as c:
        one = c.get(f"/v1/nodes/VIEW-{role}")
        listed = c.get("/v1/nodes", params={"limit": 200})
    assert one.status_code == 200
    keys = FULL_KEYS if role in ("admin", "operator") else SUMMARY_KEYS
    # the node's events (issue 12) come with the full view of one node, not in lists
    assert set(one.json()) == (keys | {"events"} if keys == FULL_KEYS else keys)
    assert one.json()["status"] == "ready"
    assert all(set(n) == keys for n in listed.json()["data"])


def test_unknown_node_is_404(shared_api):
    with http(shared_api, "viewer") as c:
        r = c.get("/v1/nodes/no-such-node")
    message = "node \"no-such-node\" not found; run 'otherix node list' to see the nodes"
    assert_error(r, 404, "not_found", message, None)


def test_node_list_filters(shared_api):
    ready_node(shared_api, "filtered-ready")
    join_node(shared_api, "filtered-pending")
    with http(shared_api) as c:
        pending = {
            n["name"] for n in c.get("/v1/nodes", params={"status": "pending"}).json()["data"]
        }
        ready = {n["name"] for n in c.get("/v1/nodes", params={"status": "ready"}).json()["data"]}
        r = c.get("/v1/nodes", params={"status": "sleeping"})
    assert "filtered-pending" in pending
    assert "filtered-ready" not in pending
    assert "filtered-ready" in ready
    assert_error(r, 400, "validation_failed", "invalid status 'sleeping'", {"field": "status"})


# the agent credential ----------------------------------------------------------------------


def test_first_heartbeat_promotes_the_node(shared_api):
    node = join_node(shared_api, "promoted")
    r = heartbeat(shared_api, node)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"received_at", "resync", "heartbeat_interval_seconds", "desired"}
    assert body["heartbeat_interval_seconds"] == 30
    with http(shared_api) as c:
        view = c.get("/v1/nodes/promoted").json()
    assert view["status"] == "ready"
    assert view["last_heartbeat_at"] is not None
    assert view["architecture"] == "amd64"


@pytest.mark.security
def test_a_node_cannot_heartbeat_for_another(shared_api):
    a, b = join_node(shared_api, "hb-self"), join_node(shared_api, "hb-other")
    r = heartbeat(shared_api, type(a)(b.name, b.id, a.credential))
    assert_error(
        r,
        401,
        "unauthenticated",
        "credential is not bound to this node",
        {"reason": "credential_node_mismatch"},
    )


@pytest.mark.security
@pytest.mark.parametrize("credential", ["otxn_forged", "not-a-credential"])
def test_unknown_node_credentials_are_401(shared_api, credential):
    node = join_node(shared_api)
    r = heartbeat(shared_api, type(node)(node.name, node.id, credential))
    err = assert_error(r, 401, "unauthenticated")
    assert err["details"] == {"reason": "credential_unknown"}


def test_architecture_mismatch_is_409(shared_api):
    node = ready_node(shared_api, "arch")
    r = heartbeat(shared_api, node, architecture="arm64")
    assert_error(
        r,
        409,
        "conflict",
        "architecture mismatch",
        {"reason": "architecture_mismatch", "registered": "amd64", "reported": "arm64"},
    )


def _versions() -> tuple[str, str, str]:
    """This control plane's version, one minor older, one minor newer."""
    own = release(__version__)
    assert own is not None, "the tests need a release version of otherix"
    older = f"{own.major}.{max(own.minor - 1, 0)}.7"
    return __version__, older, f"{own.major}.{own.minor + 1}.0"


def test_agents_of_this_or_one_minor_older_version_are_accepted(shared_api):
    own, older, _ = _versions()
    node = join_node(shared_api, "skew-ok")
    for version in (older, own, "t"):
        r = heartbeat(shared_api, node, agent_version=version)
        assert r.status_code == 200, r.text
        with http(shared_api) as c:
            assert c.get("/v1/nodes/skew-ok").json()["agent_version"] == version


def test_a_newer_agent_is_409_and_nothing_is_stored(shared_api):
    own, older, newer = _versions()
    node = join_node(shared_api, "skew-new")
    r = heartbeat(shared_api, node, agent_version=newer)
    oldest = release(older)
    err = assert_error(r, 409, "agent_version_unsupported")
    assert err["message"].startswith(f"agent version {newer} is not supported by control plane")
    assert f"upgrade the control plane to {release(newer)}.x first" in err["message"]
    assert err["details"] == {
        "agent_version": newer,
        "server_version": own,
        "accepted": {"oldest": str(oldest), "newest": str(release(own))},
    }
    with http(shared_api) as c:
        view = c.get("/v1/nodes/skew-new").json()
    assert (view["status"], view["agent_version"], view["last_heartbeat_at"]) == (
        "pending",
        None,
        None,
    )


def test_heartbeat_body_is_strict(shared_api):
    node = join_node(shared_api)
    r = heartbeat(shared_api, node, surprise=True)
    err = assert_error(r, 400, "validation_failed")
    assert {"field": "surprise", "reason": "Extra inputs are not permitted"} in err["details"][
        "fields"
    ]


# maintenance and removal --------------------------------------------------------------------


def test_cordon_and_uncordon(shared_api):
    ready_node(shared_api, "maint")
    with http(shared_api, "operator") as c:
        cordoned = c.post("/v1/nodes/maint/cordon")
        assert cordoned.status_code == 200
        assert cordoned.json()["status"] == "cordoned"
        assert cordoned.json()["cordoned"] is True
        uncordoned = c.post("/v1/nodes/maint/uncordon")
    assert uncordoned.json()["status"] == "ready"
    with http(shared_api, "developer") as c:
        r = c.post("/v1/nodes/maint/cordon")
    assert_error(r, 403, "permission_denied", details={"required": "node:maintenance"})


def test_uncordon_of_a_pending_node_is_409(shared_api):
    join_node(shared_api, "not-yet")
    with http(shared_api) as c:
        r = c.post("/v1/nodes/not-yet/uncordon")
        readmit = c.post("/v1/nodes/not-yet/readmit")
    err = assert_error(r, 409, "conflict")
    assert err["details"] == {"current_status": "pending"}
    assert_error(
        readmit,
        409,
        "conflict",
        "only a gone node can be readmitted",
        {"current_status": "pending"},
    )


@pytest.mark.security
def test_a_deleted_node_loses_its_credential_and_frees_its_name(shared_api):
    node = ready_node(shared_api, "removed")
    with http(shared_api) as c:
        assert c.delete("/v1/nodes/removed").status_code == 200  # 204 before issue 13
        assert c.get("/v1/nodes/removed").status_code == 404
        assert c.delete("/v1/nodes/removed").status_code == 404
    assert heartbeat(shared_api, node).status_code == 401
    again = join_node(shared_api, "removed")
    assert again.id != node.id

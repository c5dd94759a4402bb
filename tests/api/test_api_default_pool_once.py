"""The default pool, once per node (issue 12 item 3), through the real API on every backend.

A node gets its default pool at its first promotion to ready only: a default
pool deleted or renamed on a node does not come back when the node returns
from unreachable. ``POST /v1/nodes/{name}/provision-default-pool`` (``otherix
node provision-default-pool``) runs the step on request and says what it did.
It never provisions over a path another pool holds: that is an event on the
node (``GET /v1/nodes/{name}``, admins and operators), not a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from apihelpers import (
    Api,
    assert_error,
    create_pool,
    heartbeat,
    http,
    join_node,
    list_all,
    serve,
)

from otherix.api.workers.liveness import liveness_pass
from otherix.store.tx import sql
from support.clock import FakeClock


@pytest.fixture
def dapi(tmp_path, db_url) -> Iterator[Api]:
    """No background workers: the test moves liveness with a fake clock."""
    with serve(tmp_path / "api", db_url, run_workers=False) as api:
        api.server.set_clock(FakeClock(datetime.now(UTC)))
        yield api


def default_path(api: Api) -> str:
    return api.server.settings.storage_pools.allowed_path_prefixes[0] + "default"


def pools_on(api: Api, node: str) -> list[tuple[str, str]]:
    return sorted((p["name"], p["path"]) for p in list_all(api, {"node": node}))


def unreachable_and_back(api: Api, node) -> None:
    deps = api.server.deps
    deps.clock.advance(91)  # past workers.heartbeat.stale_threshold (90 s)
    if deps.db.backend == "postgresql":
        # several replicas age nodes by the database's clock, which only real
        # time moves: put the node's last heartbeat 91 s back on that clock
        with deps.db.write() as conn:
            sql(conn).exec_driver_sql(
                "UPDATE nodes SET last_heartbeat_at = now() - interval '91 seconds'"
                " WHERE name_lower = %(n)s",
                {"n": node.name.lower()},
            )
    assert node.name in liveness_pass(api.server.deps)["unreachable"]
    with http(api) as c:
        assert c.get(f"/v1/nodes/{node.name}").json()["status"] == "unreachable"
    assert heartbeat(api, node).status_code == 200  # promoted to ready again
    with http(api) as c:
        assert c.get(f"/v1/nodes/{node.name}").json()["status"] == "ready"


def events(api: Api, node: str, role: str = "admin") -> list[dict]:
    with http(api, role) as c:
        r = c.get(f"/v1/nodes/{node}")
    assert r.status_code == 200, r.text
    return list(r.json()["events"])


def provision(api: Api, node: str, role: str = "admin"):
    with http(api, role) as c:
        return c.post(f"/v1/nodes/{node}/provision-default-pool")


def test_the_first_promotion_provisions_and_records_it(dapi):
    node = join_node(dapi, "fresh")
    assert pools_on(dapi, "fresh") == []
    assert heartbeat(dapi, node).status_code == 200
    assert pools_on(dapi, "fresh") == [("default", default_path(dapi))]
    (event,) = events(dapi, "fresh")
    assert (event["type"], event["reason"]) == ("normal", "default_pool_provisioned")
    assert event["details"]["pool"]["path"] == default_path(dapi)


def test_a_deleted_default_pool_is_not_recreated_when_the_node_comes_back(dapi):
    keeper = join_node(dapi, "keeper")
    heartbeat(dapi, keeper)  # another instance of "default": this one is not the last
    node = join_node(dapi, "returning")
    heartbeat(dapi, node)
    (pool,) = list_all(dapi, {"node": "returning"})
    with http(dapi) as c:
        assert c.delete(f"/v1/storage-pools/{pool['id']}").status_code == 204
    unreachable_and_back(dapi, node)
    assert pools_on(dapi, "returning") == []
    reply = heartbeat(dapi, node).json()
    assert reply["desired"]["declared_pools"] == []


def test_a_renamed_default_pool_is_not_joined_by_a_new_one_at_the_same_path(dapi):
    node = join_node(dapi, "renaming")
    heartbeat(dapi, node)
    (pool,) = list_all(dapi, {"node": "renaming"})
    with http(dapi) as c:
        assert c.patch(f"/v1/storage-pools/{pool['id']}", json={"name": "mine"}).status_code == 200
    unreachable_and_back(dapi, node)
    # before issue 12: "default" again at the old path, two pools in one directory
    assert pools_on(dapi, "renaming") == [("mine", default_path(dapi))]


def test_provision_on_request_creates_it_then_says_it_exists(dapi):
    heartbeat(dapi, join_node(dapi, "other"))  # another instance of "default"
    node = join_node(dapi, "asked")
    heartbeat(dapi, node)
    (pool,) = list_all(dapi, {"node": "asked"})
    with http(dapi) as c:
        assert c.delete(f"/v1/storage-pools/{pool['id']}").status_code == 204
    r = provision(dapi, "asked")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["outcome"] == "created"
    assert body["node"] == "asked"
    assert body["pool"]["path"] == default_path(dapi)
    assert body["message"] == (
        f'default pool "default" provisioned on node asked at {default_path(dapi)}'
    )
    assert pools_on(dapi, "asked") == [("default", default_path(dapi))]
    declared = heartbeat(dapi, node).json()["desired"]["declared_pools"]
    assert [d["name"] for d in declared] == ["default"]
    again = provision(dapi, "asked").json()
    assert again["outcome"] == "exists"
    assert again["pool"]["id"] == body["pool"]["id"]
    assert [e["reason"] for e in events(dapi, "asked")] == [
        "default_pool_provisioned",
        "default_pool_provisioned",
        "default_pool_exists",
    ]


def test_provision_never_goes_over_a_held_path_and_records_an_event(dapi):
    node = join_node(dapi, "held")
    heartbeat(dapi, node)
    (pool,) = list_all(dapi, {"node": "held"})
    with http(dapi) as c:
        assert (
            c.patch(f"/v1/storage-pools/{pool['id']}", json={"name": "renamed"}).status_code == 200
        )
    r = provision(dapi, "held")
    assert r.status_code == 200, r.text  # not a failure of the request
    body = r.json()
    assert body["outcome"] == "path_held"
    assert body["other_pool"] == {"id": pool["id"], "name": "renamed", "path": default_path(dapi)}
    assert pools_on(dapi, "held") == [("renamed", default_path(dapi))]
    last = events(dapi, "held")[-1]
    assert (last["type"], last["reason"]) == ("warning", "default_pool_path_held")
    assert last["message"] == body["message"]
    assert f'overlaps storage pool "renamed" ({pool["id"]}' in last["message"]
    assert last["details"]["other_pool"]["id"] == pool["id"]


def test_the_automatic_step_is_an_event_when_the_path_is_held(dapi):
    node = join_node(dapi, "pre")
    inner = create_pool(dapi, node, "inner", default_path(dapi) + "/inner")
    assert heartbeat(dapi, node).status_code == 200  # first promotion: no failure
    assert pools_on(dapi, "pre") == [("inner", default_path(dapi) + "/inner")]
    (event,) = events(dapi, "pre")
    assert (event["type"], event["reason"]) == ("warning", "default_pool_path_held")
    assert event["details"]["other_pool"]["id"] == inner["id"]
    unreachable_and_back(dapi, node)  # once per node: no second attempt, no second event
    assert len(events(dapi, "pre")) == 1


def test_who_may_provision_and_see_events(dapi):
    heartbeat(dapi, join_node(dapi, "rbac"))
    for role in ("operator", "developer", "viewer"):
        assert_error(provision(dapi, "rbac", role), 403, "permission_denied")
    assert events(dapi, "rbac", "operator")  # operators see the events
    with http(dapi, "viewer") as c:
        assert "events" not in c.get("/v1/nodes/rbac").json()
    assert_error(provision(dapi, "no-such-node"), 404, "not_found")


def test_provision_when_the_feature_is_off(tmp_path, db_url):
    with serve(tmp_path / "off", db_url, **{"storage_pools.default_pool_name": ""}) as api:
        heartbeat(api, join_node(api, "off"))
        body = provision(api, "off").json()
        assert body["outcome"] == "disabled"
        assert "storage_pools.default_pool_name is empty" in body["message"]
        assert list_all(api) == []

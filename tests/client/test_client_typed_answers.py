"""``ApiClient``'s node, pool and token calls against the real server: each returns
its wire model (never a dict), and the model dumped as JSON is the body the
server sent, byte for byte what the CLI prints.

A recording transport keeps every answer's decoded body, so each call is
compared with its own answer (creates and actions included).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from otherix.client.answers import ApiTokenIssued, JoinTokenIssued
from otherix.client.api import ApiClient
from otherix.models.common import Page
from otherix.models.nodes import Node, NodeDeleted, NodeDetail, NodeSummary
from otherix.models.pools import PoolConceptView, StoragePool
from support.factories import Api, heartbeat_body, join_node, pool_report
from support.factories import Node as Enrolled


class Recording(httpx.HTTPTransport):
    """Sends as usual and keeps each answer's decoded JSON body (None: no body)."""

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        super().__init__()
        self.headers = headers or {}
        self.bodies: list[Any] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.headers.update(self.headers)
        response = super().handle_request(request)
        response.read()
        self.bodies.append(response.json() if response.content else None)
        return response

    @property
    def last(self) -> Any:
        return self.bodies[-1]


def client_for(api: Api, role: str, rec: Recording) -> ApiClient:
    return ApiClient(api.url, api.tokens[role], transport=rec)


@pytest.fixture
def rec() -> Recording:
    return Recording()


@pytest.fixture
def admin(api: Api, rec: Recording) -> Iterator[ApiClient]:
    with client_for(api, "admin", rec) as c:
        yield c


def same_as_sent(model: BaseModel, rec: Recording) -> None:
    """The model is what the server sent: its JSON dump equals the answer's body."""
    assert model.model_dump(mode="json") == rec.last


def heartbeat(api: Api, node: Enrolled, pools: list[dict[str, Any]]) -> None:
    with api.client(None) as c:
        body = heartbeat_body(pools)
        r = c.post(f"/v1/nodes/{node.name}/heartbeat", json=body, headers=node.auth)
        assert r.status_code == 200, r.text


def ready(api: Api, name: str) -> Enrolled:
    node = join_node(api, name)
    heartbeat(api, node, [])
    return node


def test_node_calls_return_their_models(api: Api, admin: ApiClient, rec: Recording) -> None:
    node = ready(api, "node-a")
    heartbeat(api, node, [pool_report("default")])

    nodes = admin.list_nodes(limit=50)
    assert isinstance(nodes, Page)
    assert nodes.data
    assert all(type(n) is Node for n in nodes.data)  # full nodes for an admin
    same_as_sent(nodes, rec)

    detail = admin.get_node("node-a")
    assert isinstance(detail, NodeDetail)
    assert detail.agent_version == "t"
    same_as_sent(detail, rec)

    for action, cordoned in (("cordon", True), ("uncordon", False)):
        after = admin.node_action("node-a", action)
        assert type(after) is Node
        assert after.cordoned is cordoned
        same_as_sent(after, rec)


def test_a_viewer_gets_node_summaries(api: Api) -> None:
    ready(api, "node-a")
    rec = Recording()
    with client_for(api, "viewer", rec) as viewer:
        nodes = viewer.list_nodes()
        assert [type(n) for n in nodes.data] == [NodeSummary]
        same_as_sent(nodes, rec)
        one = viewer.get_node("node-a")
        assert type(one) is NodeSummary
        same_as_sent(one, rec)


def test_delete_node_is_the_node_and_its_pools(api: Api, admin: ApiClient, rec: Recording) -> None:
    node = ready(api, "node-b")
    admin.unset_default_pool()  # else node-b holds the default pool's last instance
    pool = admin.create_pool(
        {"node": node.name, "name": "gone-with-it", "path": "/var/lib/otherix/pools/gone"}
    )
    deleted = admin.delete_node("node-b")
    assert isinstance(deleted, NodeDeleted)
    assert pool.id in [p.id for p in deleted.deleted_pools]
    same_as_sent(deleted, rec)


def test_pool_calls_return_their_models(api: Api, admin: ApiClient, rec: Recording) -> None:
    node = ready(api, "node-a")
    body = {"node": node.name, "name": "fast", "path": "/var/lib/otherix/pools/fast"}

    rehearsed = admin.create_pool(body, dry_run=True)
    assert isinstance(rehearsed, StoragePool)
    same_as_sent(rehearsed, rec)

    made = admin.create_pool(body, idempotency_key=f"k-{uuid.uuid4()}")
    assert isinstance(made, StoragePool)
    assert made.name == "fast"
    same_as_sent(made, rec)

    listed = admin.list_pools(node=node.name)
    assert isinstance(listed, Page)
    assert made.id in [p.id for p in listed.data]
    assert all(isinstance(p, StoragePool) for p in listed.data)
    same_as_sent(listed, rec)

    instance = admin.get_pool(made.id)
    assert isinstance(instance, StoragePool)
    same_as_sent(instance, rec)
    by_id = admin.get_pool_instance(made.id)
    assert isinstance(by_id, StoragePool)
    same_as_sent(by_id, rec)

    concept = admin.get_pool("fast")
    assert isinstance(concept, PoolConceptView)
    assert [i.id for i in concept.instances] == [made.id]
    same_as_sent(concept, rec)

    updated = admin.update_pool(made.id, {"config": {"tier": "ssd", "n": 1.5}})
    assert isinstance(updated, StoragePool)
    assert updated.config == {"tier": "ssd", "n": 1.5}
    same_as_sent(updated, rec)

    failed = pool_report("fast", "failed", error='pool "fast": gone')
    failed.update(capacity_bytes=None, available_bytes=None, reconciliation_reason="pool_missing")
    heartbeat(api, node, [failed])
    reinit = admin.reinit_pool(made.id)
    assert isinstance(reinit, StoragePool)
    assert reinit.reconciliation_status == "pending"
    same_as_sent(reinit, rec)


def test_token_creates_carry_the_secret(admin: ApiClient, rec: Recording) -> None:
    token = admin.create_token("ci", "2099-01-01T00:00:00Z")
    assert isinstance(token, ApiTokenIssued)
    assert token.token
    assert token.token.startswith("otx_")
    same_as_sent(token, rec)

    join = admin.create_join_token(3600, 2, "rack 4")
    assert isinstance(join, JoinTokenIssued)
    assert join.token
    assert join.token.startswith("otxj_")
    assert (join.max_uses, join.description) == (2, "rack 4")
    same_as_sent(join, rec)


def test_a_replayed_token_create_has_no_secret(api: Api) -> None:
    """An Idempotency-Key replay answers the same object with the secret withheld:
    the client says so with ``token=None`` instead of failing to parse it."""
    rec = Recording({"Idempotency-Key": f"k-{uuid.uuid4()}"})
    with client_for(api, "admin", rec) as keyed:
        first = keyed.create_token("ci")
        again = keyed.create_token("ci")
        assert first.token
        assert again.token is None
        assert again.id == first.id
        same_as_sent(again, rec)

    rec = Recording({"Idempotency-Key": f"k-{uuid.uuid4()}"})
    with client_for(api, "admin", rec) as keyed:
        first_join = keyed.create_join_token(3600, 1)
        again_join = keyed.create_join_token(3600, 1)
        assert first_join.token
        assert again_join.token is None
        assert again_join.id == first_join.id
        same_as_sent(again_join, rec)

"""The typed ``ApiClient`` against the real server: models in, the same JSON out.

Each typed call's model, dumped as JSON (what the CLI prints), equals the
body the server sent; errors come back as their family's class.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from clihelpers import get_json
from pydantic import BaseModel
from test_cli_vms_helpers import IMAGE, make_vm, ready_node, ready_pool

from otherix.client.api import ApiClient
from otherix.client.errors import (
    ApiError,
    ConflictError,
    DefaultPoolMissing,
    DeleteBlockedError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from otherix.models.auth import TokenPair, User
from otherix.models.common import AsyncTaskAccepted
from otherix.models.nodes import DefaultPoolProvisioned
from otherix.models.vms import VM
from support.server import ADMIN


@pytest.fixture
def client(api) -> Iterator[ApiClient]:
    c = ApiClient(api.url, api.tokens["admin"])
    with c:
        yield c


def test_typed_answers_dump_to_the_body_the_server_sent(api, client: ApiClient) -> None:
    made = client.create_user("carol", "carol-pass-1", "viewer")
    assert isinstance(made, User)
    _, raw = get_json(api, f"/v1/users/{made.id}")
    assert made.model_dump(mode="json") == raw

    disabled = client.update_user("carol", {"disabled": True})
    _, raw = get_json(api, f"/v1/users/{made.id}")
    assert disabled.disabled_at is not None
    assert disabled.model_dump(mode="json") == raw

    node = ready_node(api, "node-a")
    provisioned = client.provision_default_pool(node.name)
    assert isinstance(provisioned, DefaultPoolProvisioned)
    assert provisioned.outcome == "exists"

    assert client.set_default_pool("default") == "default"
    assert client.get_default_pool() == "default"
    ready_pool(api, node, "fast")
    scan = client.scan_pool("fast")
    assert isinstance(scan, AsyncTaskAccepted)
    status, task = get_json(api, f"/v1/tasks/{scan.task_id}")
    assert status == 200
    assert task["id"] == scan.task_id


def test_login_is_a_token_pair(api) -> None:
    with ApiClient(api.url) as anonymous:
        session = anonymous.login(*ADMIN)
    assert isinstance(session, TokenPair)
    assert session.user.username == "admin"


def test_delete_vm_is_the_accepted_task(api, client: ApiClient) -> None:
    ready_node(api, "node-a")
    make_vm(api, "web-1")
    accepted = client.delete_vm("web-1")  # placed on a node: the node deletes its disk
    assert isinstance(accepted, AsyncTaskAccepted)
    _, task = get_json(api, f"/v1/tasks/{accepted.task_id}")
    assert task["type"] == "vm.delete"
    with pytest.raises(NotFoundError):
        client.delete_vm("no-such-vm")


def test_errors_are_their_family(api, client: ApiClient) -> None:
    client.unset_default_pool()
    assert client.get_default_pool() is None
    with pytest.raises(DefaultPoolMissing):
        client.json("GET", "/v1/cluster/default-pool")
    with ApiClient(api.url, api.tokens["viewer"]) as viewer, pytest.raises(PermissionDeniedError):
        viewer.create_user("dave", "dave-pass-12", "viewer")
    with ApiClient(api.url, "otx_not-a-token") as stranger, pytest.raises(UnauthenticatedError):
        stranger.me()
    client.create_user("erin", "erin-pass-12", "viewer")
    with pytest.raises(ConflictError) as info:
        client.create_user("erin", "erin-pass-12", "viewer")
    assert isinstance(info.value, ApiError)


def test_a_blocked_pool_delete_is_delete_blocked(api, client: ApiClient) -> None:
    node = ready_node(api, "node-a")
    ready_pool(api, node, "fast")
    client.set_default_pool("fast")
    with pytest.raises(DeleteBlockedError) as info:
        client.delete_pool("fast")
    assert info.value.default_pool_in_use


def test_tasks_are_typed_and_dump_to_the_body_the_server_sent(api, client: ApiClient) -> None:
    node = ready_node(api, "node-a")
    ready_pool(api, node, "fast")
    scan = client.scan_pool("fast")
    task = client.get_task(scan.task_id)
    assert task.type == "storage_pool.scan"
    _, raw = get_json(api, f"/v1/tasks/{scan.task_id}")
    assert task.model_dump(mode="json") == raw
    page = client.list_tasks(limit=200)
    _, raw_page = get_json(api, "/v1/tasks?limit=200")
    assert page.model_dump(mode="json") == raw_page
    assert scan.task_id in [t.id for t in page.data]


def test_vms_are_typed_and_dump_to_the_body_the_server_sent(api, client: ApiClient) -> None:
    ready_node(api, "node-a")
    make_vm(api, "web-1")
    vm = client.get_vm("web-1")
    assert isinstance(vm, VM)
    _, raw = get_json(api, "/v1/vms/web-1")
    assert vm.model_dump(mode="json") == raw
    page = client.list_vms(limit=200)
    _, raw_page = get_json(api, "/v1/vms?limit=200")
    assert page.model_dump(mode="json") == raw_page
    body = {"name": "web-2", "image_url": IMAGE, "arch": "amd64", "vcpus": 2, "memory_mb": 2048}
    rehearsed = client.create_vm(body, dry_run=True)
    assert rehearsed.name == "web-2"


def test_user_and_token_lists_dump_to_the_body_the_server_sent(api, client: ApiClient) -> None:
    assert client.me().username == ADMIN[0]
    pages: list[tuple[str, BaseModel]] = [
        ("/v1/users", client.list_users()),
        ("/v1/users/me/api-tokens", client.list_tokens()),
        ("/v1/nodes/join-tokens", client.list_join_tokens()),
    ]
    for path, page in pages:
        _, raw = get_json(api, path)
        assert page.model_dump(mode="json") == raw, path
    ready_node(api, "node-a")  # a join token, used
    _, raw = get_json(api, "/v1/nodes/join-tokens")
    assert raw["data"]
    assert client.list_join_tokens().model_dump(mode="json") == raw

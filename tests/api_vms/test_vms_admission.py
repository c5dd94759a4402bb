"""``POST /v1/vms``: admission (201 pending), the default pool, and request checks."""

from __future__ import annotations

import uuid

import pytest
from test_vms_helpers import IMAGE, SHA, error_of, get, post_vm, ready_node, vm_body


def test_admission_answers_201_pending_with_the_request(api):
    r = post_vm(api, "web-1", pool="nowhere", disk_gib=20, image_sha256=SHA.upper())
    assert r.status_code == 201, r.text
    vm = r.json()
    assert vm["status"]["phase"] == "pending"
    assert vm["name"] == "web-1"
    assert vm["owner"] == "developer"
    assert (vm["image_url"], vm["image_sha256"]) == (IMAGE, SHA)
    assert (vm["architecture"], vm["vcpus"], vm["memory_mb"]) == ("amd64", 2, 2048)
    assert (vm["format"], vm["disk_gib"], vm["pull_policy"]) == ("qcow2", 20, "if-not-present")
    assert (vm["pool"], vm["pool_id"], vm["node"]) == ("nowhere", None, None)
    # pool existence is not checked at admission: the VM waits, with the reason
    assert vm["status"]["reason"] == "pool_not_found"
    assert vm["status"]["message"] == 'pool "nowhere" not found in cluster'
    assert get(api, "/v1/vms/web-1").json()["id"] == vm["id"]


def test_a_vm_without_pool_gets_the_cluster_default(api):
    ready_node(api, "node-a")
    vm = post_vm(api, "web-1").json()
    assert vm["pool"] == "default"
    assert vm["node"] == "node-a"  # placed before the answer
    assert vm["status"]["phase"] == "pending"
    assert vm["status"]["reason"] is None


def test_no_pool_and_no_default_is_400_default_pool_not_set(api):
    with api.client("admin") as c:
        assert c.delete("/v1/cluster/default-pool").status_code == 204
    error_of(post_vm(api, "web-1"), 400, "default_pool_not_set")
    assert get(api, "/v1/vms").json()["data"] == []
    # an explicit pool needs no default
    assert post_vm(api, "web-1", pool="fast").status_code == 201


def test_the_default_is_resolved_at_admission_by_its_current_name(api):
    ready_node(api, "node-a")
    with api.client("admin") as c:
        r = c.put("/v1/cluster/default-pool", json={"name": "DEFAULT"})
        assert r.status_code == 200, r.text
    assert post_vm(api, "web-1").json()["pool"] == "default"


def test_viewer_cannot_create(shared_api):
    err = error_of(post_vm(shared_api, "viewer-1", role="viewer"), 403, "permission_denied")
    assert err["details"] == {"required": "vm:create"}


def test_every_writer_role_can_create(shared_api):
    for role in ("admin", "operator", "developer"):
        assert post_vm(shared_api, f"vm-{role}", role=role, pool="p").status_code == 201


def test_names_are_unique_case_insensitively_409_vm_name_in_use(api):
    assert post_vm(api, "Web-1", pool="p").status_code == 201
    err = error_of(post_vm(api, "web-1", role="admin", pool="p"), 409, "vm_name_in_use")
    assert err["details"] == {"field": "name"}
    assert get(api, "/v1/vms/WEB-1").json()["name"] == "Web-1"


def test_a_node_uuid_as_hint_is_400_validation_failed(shared_api):
    r = post_vm(shared_api, "hint-1", node=str(uuid.uuid4()))
    err = error_of(r, 400, "validation_failed")
    assert err["details"]["field"] == "node"
    assert err["details"]["reason"] == "uuid_not_accepted_in_name_path"


def test_a_uuid_as_vm_name_is_refused(shared_api):
    err = error_of(post_vm(shared_api, str(uuid.uuid4())), 400, "validation_failed")
    assert err["details"]["reason"] == "uuid_not_accepted_in_name_path"


def test_a_uuid_in_the_name_path_is_400(shared_api):
    for method in ("GET", "DELETE"):
        with shared_api.client("admin") as c:
            r = c.request(method, f"/v1/vms/{uuid.uuid4()}")
        err = error_of(r, 400, "validation_failed")
        assert err["details"]["reason"] == "uuid_not_accepted_in_name_path"
        assert err["details"]["field"] == "name"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "-web"}, "name"),
        ({"name": "a" * 254}, "name"),
        ({"image_url": "ftp://host/x.img"}, "image_url"),
        ({"image_url": "https://host/"}, "image_url"),
        ({"image_url": "images/x.img"}, "image_url"),
        ({"image_url": "https://user:secret@host/x.img"}, "image_url"),
        ({"image_url": "https://token@host/x.img"}, "image_url"),
        ({"image_sha256": "xyz"}, "image_sha256"),
        ({"image_sha256": ""}, "image_sha256"),
        ({"pool": "bad pool"}, "pool"),
        ({"node": "bad node"}, "node"),
    ],
)
def test_rule_violations_name_the_field(shared_api, fields, field):
    body = {**vm_body("rule-1", pool="p"), **fields}
    with shared_api.client("developer") as c:
        r = c.post("/v1/vms", json=body)
    assert error_of(r, 400, "validation_failed")["details"]["field"] == field


@pytest.mark.parametrize(
    "fields",
    [
        {"disk_gib": -1},
        {"disk_gib": 65537},
        {"vcpus": 0},
        {"vcpus": "2"},
        {"memory_mb": 1},
        {"format": "vmdk"},
        {"pull_policy": "never"},
        {"arch": "riscv64"},
        {"colour": "blue"},
    ],
)
def test_shape_violations_are_400_validation_failed(shared_api, fields):
    error_of(post_vm(shared_api, "shape-1", **fields), 400, "validation_failed")


def test_required_fields(shared_api):
    for missing in ("name", "image_url", "arch", "vcpus", "memory_mb"):
        body = vm_body("required-1")
        body.pop(missing)
        with shared_api.client("developer") as c:
            error_of(c.post("/v1/vms", json=body), 400, "validation_failed")


def test_raw_format_and_always_policy_are_kept(shared_api):
    vm = post_vm(shared_api, "raw-1", pool="p", format="raw", pull_policy="always").json()
    assert (vm["format"], vm["pull_policy"]) == ("raw", "always")


def test_credentials_in_an_image_url_are_refused_with_a_sentence(shared_api):
    """A password in the URL would show in every VM view, reach the node and sit
    beside the cached image (``.source``): it is refused, never stored."""
    body = vm_body("creds-1", pool="p", image_url="https://user:secret@host/x.img")
    with shared_api.client("developer") as c:
        r = c.post("/v1/vms", json=body)
        listed = c.get("/v1/vms").text
    err = error_of(r, 400, "validation_failed")
    assert err["message"] == (
        "image_url must not carry credentials (user:password@); serve the image without them"
    )
    assert "secret" not in listed

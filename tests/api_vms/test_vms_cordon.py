"""Pool cordon (issue 16, deliverable 5): placement skips a cordoned instance; a VM that
names a pool cordoned where it could go is refused with ``pool_cordoned``; the VMs on it
stay; uncordon lets the scheduler place what waited."""

from __future__ import annotations

from test_vms_helpers import add_pool, error_of, get, get_vm, place, post_vm, ready_node


def test_placement_skips_a_cordoned_instance_and_uncordon_brings_it_back(api, px) -> None:
    a, b = ready_node(api, f"{px}-a"), ready_node(api, f"{px}-b")
    pa = add_pool(api, a, f"{px}-p", available=900 << 30)  # the roomier one
    add_pool(api, b, f"{px}-p", available=100 << 30)
    with api.client("admin") as c:
        r = c.post(f"/v1/storage-pools/{pa['id']}/cordon")
        assert r.status_code == 200, r.text
        assert r.json()["cordoned"] is True
        again = c.post(f"/v1/storage-pools/{pa['id']}/cordon")
        assert again.json()["cordoned"] is True  # idempotent
    assert post_vm(api, f"{px}-1", pool=f"{px}-p").status_code == 201
    assert get_vm(api, f"{px}-1")["node"] == f"{px}-b"
    listed = get(api, "/v1/storage-pools", node=f"{px}-a").json()["data"]
    assert [p["cordoned"] for p in listed if p["name"] == f"{px}-p"] == [True]
    with api.client("admin") as c:
        r = c.post(f"/v1/storage-pools/{pa['id']}/uncordon")
        assert r.json()["cordoned"] is False
    assert post_vm(api, f"{px}-2", pool=f"{px}-p").status_code == 201
    assert get_vm(api, f"{px}-2")["node"] == f"{px}-a"


def test_a_vm_naming_a_cordoned_pool_is_refused_and_nothing_is_admitted(api, px) -> None:
    a, b = ready_node(api, f"{px}-a"), ready_node(api, f"{px}-b")
    pa, pb = add_pool(api, a, f"{px}-p"), add_pool(api, b, f"{px}-p")
    with api.client("admin") as c:
        c.post(f"/v1/storage-pools/{pa['id']}/cordon")
        # the instance on the node hint is cordoned: refused, with the node
        error = error_of(post_vm(api, f"{px}-1", pool=f"{px}-p", node=f"{px}-a"), 409,
                         "pool_cordoned")  # fmt: skip
        assert error["details"] == {"field": "pool", "pool": f"{px}-p", "node": f"{px}-a"}
        c.post(f"/v1/storage-pools/{pb['id']}/cordon")
        error = error_of(post_vm(api, f"{px}-2", pool=f"{px}-p"), 409, "pool_cordoned")
        assert "otherix pool uncordon" in error["message"]
        # by instance UUID too
        error_of(post_vm(api, f"{px}-3", pool=pa["id"]), 409, "pool_cordoned")
    names = [v["name"] for v in get(api, "/v1/vms").json()["data"]]
    assert not any(n.startswith(px) for n in names)


def test_the_default_pool_cordoned_leaves_a_vm_pending_until_uncordoned(api, px) -> None:
    node = ready_node(api, f"{px}-a")
    pool = add_pool(api, node, f"{px}-p")
    with api.client("admin") as c:
        assert c.put("/v1/cluster/default-pool", json={"name": f"{px}-p"}).status_code == 200
        c.post(f"/v1/storage-pools/{pool['id']}/cordon")
    r = post_vm(api, f"{px}-1")  # no pool: the default, which nobody named
    assert r.status_code == 201, r.text
    vm = get_vm(api, f"{px}-1")
    assert (vm["status"]["phase"], vm["status"]["reason"]) == ("pending", "pool_cordoned")
    with api.client("admin") as c:
        c.post(f"/v1/storage-pools/{pool['id']}/uncordon")
    place(api)
    assert get_vm(api, f"{px}-1")["node"] == f"{px}-a"


def test_cordon_needs_an_admin_and_one_instance(api, px) -> None:
    a, b = ready_node(api, f"{px}-a"), ready_node(api, f"{px}-b")
    pa = add_pool(api, a, f"{px}-p")
    add_pool(api, b, f"{px}-p")
    for role in ("operator", "developer", "viewer"):
        with api.client(role) as c:
            assert c.post(f"/v1/storage-pools/{pa['id']}/cordon").status_code == 403
    with api.client("admin") as c:
        error_of(c.post(f"/v1/storage-pools/{px}-p/cordon"), 400, "pool_name_ambiguous")
        error_of(c.post("/v1/storage-pools/nosuch/cordon"), 404, "not_found")

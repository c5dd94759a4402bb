"""One directory, one pool (issue 12 item 1), through the real API on every backend.

On one node a create whose path is equal to, inside, or contains another
pool's path (compared cleaned) is ``409 conflict`` reason
``pool_path_overlap`` naming the other pool; a path equal to an allowed prefix
is ``path_not_allowed``; siblings that only share text are fine. 50 concurrent
creates of nested paths give exactly one 201 per overlapping set. Rows that
overlap from before the rule (written through the store) carry a
``path_overlap`` condition on both pools.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from apihelpers import (
    Api,
    assert_error,
    create_pool,
    get_pool,
    http,
    join_node,
    list_all,
    pool_body,
    serve,
)

from otherix.domain.paths import clean_path, paths_overlap
from otherix.store.pools import store as qp
from otherix.store.ports.pools import NewPool

PREFIX = "/srv/p/"
PREFIX_ITSELF = (
    "path is an allowed path prefix itself; a pool lives below a prefix "
    "(a pool at the prefix would contain every other pool there)"
)


@pytest.fixture
def papi(tmp_path, db_url) -> Iterator[Api]:
    """A server on each backend whose allowlist is ``/srv/p/`` (the issue's example)."""
    with serve(tmp_path / "api", db_url, **{"storage_pools.allowed_path_prefixes": [PREFIX]}) as a:
        yield a


def post(api, node, name, path):
    with http(api) as c:
        return c.post("/v1/storage-pools", json=pool_body(node, name, path))


def assert_overlap(r, other: dict, path: str, relation: str, node: str) -> None:
    err = assert_error(r, 409, "conflict")
    assert err["details"] == {
        "reason": "pool_path_overlap",
        "path": path,
        "relation": relation,
        "other_pool": {"id": other["id"], "name": other["name"], "path": other["path"]},
    }
    # a sentence an operator can act on: which pool, where, on which node
    assert (
        f'storage pool "{other["name"]}" ({other["id"]}, path "{other["path"]}")'
        in (err["message"])
    )
    assert f"on node {node}" in err["message"]
    assert "one directory can hold only one pool" in err["message"]


@pytest.mark.parametrize(
    ("first", "second", "relation"),
    [
        ("/srv/p/x", "/srv/p/x", "same"),  # the same path twice
        ("/srv/p/x", "//srv/p/./x", "same"),  # spelled differently, one directory
        ("/srv/p/x", "/srv/p/x/", "same"),
        ("/srv/p/x", "/srv/p/x/vms/inner", "inside"),  # inside another pool's vms/
        ("/srv/p/x", "/srv/p/x/scratch/inner", "inside"),  # its scratch/ sweep would eat it
        ("/srv/p/x", "/srv/p/x/images", "inside"),
        ("/srv/p/a/b", "/srv/p/a", "contains"),  # a pool containing another
        ("/srv/p/a/b/c", "//srv/p//a/", "contains"),
    ],
)
def test_an_overlapping_path_on_the_same_node_is_refused(papi, first, second, relation):
    node = join_node(papi, "n1")
    held = create_pool(papi, node, "held", first)
    r = post(papi, node, "later", second)
    assert_overlap(r, held, second, relation, "n1")
    assert [p["name"] for p in list_all(papi)] == ["held"]
    # the same path on another node is another directory: fine
    other = join_node(papi, "n2")
    assert post(papi, other, "later", second).status_code == 201


@pytest.mark.parametrize("path", ["/srv/p", "/srv/p/", "//srv/p//", "/srv/./p/."])
def test_a_path_equal_to_an_allowed_prefix_is_not_allowed(papi, path):
    node = join_node(papi, "n1")
    r = post(papi, node, "at-prefix", path)
    assert_error(
        r, 400, "path_not_allowed", PREFIX_ITSELF, {"allowed_prefixes": [PREFIX], "path": path}
    )
    assert list_all(papi) == []


def test_the_root_prefix_admits_everything_but_the_root_itself(tmp_path, db_url):
    with serve(tmp_path / "root", db_url, **{"storage_pools.allowed_path_prefixes": ["/"]}) as a:
        node = join_node(a, "n1")
        assert_error(post(a, node, "root", "/"), 400, "path_not_allowed", PREFIX_ITSELF)
        assert post(a, node, "below", "/srv").status_code == 201


def test_siblings_that_share_text_do_not_overlap(papi):
    node = join_node(papi, "n1")
    for name, path in (("a", "/srv/p/a"), ("ab", "/srv/p/ab"), ("a-b", "/srv/p/a-b")):
        r = post(papi, node, name, path)
        assert r.status_code == 201, r.text
        assert r.json()["conditions"] == []
        assert r.json()["path"] == path  # stored as typed
    assert all(p["conditions"] == [] for p in list_all(papi))


def test_a_duplicate_name_keeps_its_old_answer(papi):
    node = join_node(papi, "n1")
    create_pool(papi, node, "same", "/srv/p/same")
    r = post(papi, node, "SAME", "/srv/p/same")  # a repeated create: same name, same path
    assert_error(
        r,
        409,
        "conflict",
        "another storage pool with this name already exists on the target node",
        {"field": "name"},
    )


NESTED_SETS = 5
PER_SET = 10


def _nested(k: int) -> list[str]:
    """A chain of ten nested directories, each spelled its own way: every pair overlaps."""
    base = f"/srv/p/set{k}"
    out = []
    for depth in range(PER_SET):
        path = base + "/d" * depth
        spelling = depth % 4
        if spelling == 1:
            path += "/"
        elif spelling == 2:
            path = "/" + path
        elif spelling == 3:
            path = path.replace("/set", "/./set", 1)
        out.append(path)
    return out


def test_concurrent_nested_creates_on_one_node_create_one_per_overlapping_set(papi):
    node = join_node(papi, "busy")
    jobs = [(k, i, path) for k in range(NESTED_SETS) for i, path in enumerate(_nested(k))]
    assert len(jobs) == NESTED_SETS * PER_SET == 50

    def create(job):
        k, i, path = job
        with http(papi) as c:
            return k, c.post("/v1/storage-pools", json=pool_body(node, f"p{k}-{i}", path))

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(create, jobs))
    for k in range(NESTED_SETS):
        answers = [r for set_k, r in results if set_k == k]
        created = [r for r in answers if r.status_code == 201]
        assert len(created) == 1, [(r.status_code, r.text[:120]) for r in answers]
        for r in answers:
            if r.status_code != 201:
                assert_error(r, 409, "conflict")
                assert r.json()["error"]["details"]["reason"] == "pool_path_overlap"
    stored = list_all(papi, {"node": "busy"})
    assert len(stored) == NESTED_SETS
    paths = [p["path"] for p in stored]
    assert not any(paths_overlap(a, b) for i, a in enumerate(paths) for b in paths[i + 1 :])


# --- rows from before the rule ----------------------------------------------------------


def _legacy_pool(api: Api, node_id: str, name: str, path: str, age: int) -> str:
    """A pool row written through the store, as an older server could have."""
    pool_id = str(uuid.uuid4())
    at = datetime.now(UTC) - timedelta(seconds=age)
    with api.server.deps.db.write() as conn:
        qp.insert_pool(
            conn,
            NewPool(
                id=pool_id,
                node_id=node_id,
                name=name,
                type="local_dir",
                path=path,
                config={},
                created_at=at,
            ),
        )
    return pool_id


def test_legacy_overlapping_rows_show_a_condition_on_both_pools(papi):
    node = join_node(papi, "old")
    elsewhere = join_node(papi, "other")
    outer = _legacy_pool(papi, node.id, "outer", "/srv/p/outer", 30)
    inner = _legacy_pool(papi, node.id, "inner", "//srv/p/outer/./scratch/in", 20)
    twin = _legacy_pool(papi, node.id, "twin", "/srv/p/outer/", 10)
    fine = create_pool(papi, node, "fine", "/srv/p/fine")
    same_path_other_node = create_pool(papi, elsewhere, "outer", "/srv/p/outer")

    by_id = {p["id"]: p for p in list_all(papi)}
    assert by_id[fine["id"]]["conditions"] == []
    assert by_id[same_path_other_node["id"]]["conditions"] == []

    def others(pool_id: str) -> list[str]:
        conds = by_id[pool_id]["conditions"]
        assert all(c["type"] == "path_overlap" for c in conds)
        assert all(c["message"] for c in conds)
        return [c["other_pool"]["name"] for c in conds]

    assert others(outer) == ["inner", "twin"]
    assert others(inner) == ["outer", "twin"]
    assert others(twin) == ["outer", "inner"]
    cond = by_id[inner]["conditions"][0]
    assert cond["other_pool"] == {"id": outer, "name": "outer", "path": "/srv/p/outer"}
    assert "is inside the directory of storage pool" in cond["message"]

    # the flat view, the concept view and a one-row page say the same
    flat = get_pool(papi, outer).json()
    assert [c["other_pool"]["id"] for c in flat["conditions"]] == [inner, twin]
    concept = get_pool(papi, "outer").json()
    conds = {i["node"]: i["conditions"] for i in concept["instances"]}
    assert conds["other"] == []
    assert len(conds["old"]) == 2
    with http(papi, "viewer") as c:
        page = c.get("/v1/storage-pools", params={"limit": 1}).json()["data"]
    assert page[0]["id"] == outer
    assert len(page[0]["conditions"]) == 2
    # and no new create can join them
    r = post(papi, node, "fourth", "/srv/p/outer/vms/x")
    assert r.status_code == 409
    assert r.json()["error"]["details"]["other_pool"]["id"] == outer


def test_cleaned_paths_are_what_the_rule_compares():
    # the table the tests above rely on: spellings the API treats as one directory
    assert clean_path("//srv/p/./x") == clean_path("/srv/p/x/") == "/srv/p/x"
    assert not paths_overlap("/srv/p/a", "/srv/p/ab")

"""Hypothesis against the live API's pagination: cursors from the outside and page walks.

- Every list operation of the live ``/openapi.json`` that takes a ``cursor``
  answers ``400 validation_failed "invalid cursor"`` exactly when
  ``decode_cursor`` refuses the value (empty means "first page"), and never a
  5xx, for garbage text, real cursors with one edit, and real cursors.
- Following ``meta.next_cursor`` with any ``limit`` (and a node filter) yields
  the full listing exactly once, in ``(created_at, id)`` order.
"""

from __future__ import annotations

import string

import httpx
from fuzzhelpers import WHEN, mutated_cursors, run_property
from hypothesis import strategies as st

from otherix.models.pagination import InvalidCursor, decode_cursor, encode_cursor

POOLS = "/var/lib/otherix/pools/"


def join_node(api, name: str) -> str:
    with api.client("admin") as admin, api.client(None) as anon:
        r = admin.post("/v1/nodes/join-tokens", json={})
        assert r.status_code == 201, r.text
        r = anon.post("/v1/nodes/join", json={"join_token": r.json()["token"], "name": name})
    assert r.status_code == 201, r.text
    return name


def cursor_operations(client: httpx.Client) -> list[str]:
    schema = client.get("/openapi.json").json()
    return sorted(
        path
        for path, item in schema["paths"].items()
        if any(p["name"] == "cursor" for p in item.get("get", {}).get("parameters", []))
    )


def refused(cursor: str) -> bool:
    if cursor == "":
        return False
    try:
        decode_cursor(cursor)
    except InvalidCursor:
        return True
    return False


cursors = st.one_of(
    st.text(max_size=80),
    st.text(st.sampled_from(list(string.ascii_letters + string.digits + "-_=")), max_size=80),
    mutated_cursors(),
    st.builds(lambda when, u: encode_cursor(when, str(u)), WHEN, st.uuids()),
    st.just("A" * 513),
)


def test_list_operations_refuse_exactly_the_cursors_decode_refuses(api, reliability):
    with api.client("admin") as client:
        paths = cursor_operations(client)
        assert {"/v1/storage-pools", "/v1/nodes", "/v1/tasks", "/v1/vms"} <= set(paths)

        def body(example: tuple[str, str]) -> str:
            path, cursor = example
            r = client.get(path, params={"cursor": cursor})
            if refused(cursor):
                assert r.status_code == 400, (path, cursor, r.status_code, r.text)
                assert r.json() == {
                    "error": {
                        "code": "validation_failed",
                        "message": "invalid cursor",
                        "details": {"field": "cursor"},
                    }
                }, (path, cursor)
                return "refused"
            assert r.status_code == 200, (path, cursor, r.status_code, r.text)
            assert set(r.json()) == {"data", "meta"}
            return "accepted"

        seen = run_property(
            reliability,
            "API: list routes refuse exactly the cursors decode refuses",
            st.tuples(st.sampled_from(paths), cursors),
            body,
            max_examples=200,
            detail=f"{len(paths)} list operations with a cursor: {', '.join(paths)}",
        )
    assert seen["accepted"] >= 20
    assert seen["refused"] >= 50


def test_following_next_cursor_yields_every_row_once_in_order(api, reliability):
    nodes = [join_node(api, f"page-node-{i}") for i in range(2)]
    with api.client("admin") as client:
        for i in range(23):
            node = nodes[i % 3 % 2]  # 16 on one node, 7 on the other, interleaved
            pool = {"node": node, "name": f"page-{i:02d}", "path": f"{POOLS}page-{i:02d}"}
            assert client.post("/v1/storage-pools", json=pool).status_code == 201

        def listing(params: dict[str, object]) -> list[dict[str, object]]:
            r = client.get("/v1/storage-pools", params={**params, "limit": 200})
            assert r.status_code == 200, r.text
            assert r.json()["meta"]["next_cursor"] is None
            return list(r.json()["data"])

        full: dict[str | None, list[dict[str, object]]] = {
            None: listing({}),
            **{n: listing({"node": n}) for n in nodes},
        }
        assert len(full[None]) >= 23
        pages_seen = []

        def body(example: tuple[int, str | None]) -> str:
            limit, node = example
            params: dict[str, object] = {"limit": limit, **({"node": node} if node else {})}
            rows: list[dict[str, object]] = []
            cursor = None
            pages = 0
            while True:
                r = client.get("/v1/storage-pools", params={**params, "cursor": cursor or ""})
                assert r.status_code == 200, r.text
                page = r.json()
                assert len(page["data"]) <= limit
                rows += page["data"]
                pages += 1
                cursor = page["meta"]["next_cursor"]
                if cursor is None:
                    break
                assert len(page["data"]) == limit  # only a full page has a successor
                assert pages <= len(full[None]) + 1, "the walk does not end"
            assert [r["id"] for r in rows] == [r["id"] for r in full[node]]
            keys = [(r["created_at"], r["id"]) for r in rows]
            assert keys == sorted(keys)
            pages_seen.append(pages)
            return "multi-page" if pages > 1 else "single-page"

        seen = run_property(
            reliability,
            "API: next_cursor walk = full listing, once, in order",
            st.tuples(st.integers(1, 30), st.sampled_from([None, *nodes])),
            body,
            max_examples=60,
            checked="multi-page",
            detail=lambda: f"{sum(pages_seen)} pages fetched",
        )
    assert seen["multi-page"] >= 20

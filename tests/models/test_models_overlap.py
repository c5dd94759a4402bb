"""The one-directory-one-pool rule (``otherix.models.overlap``) and the allowlist's
"below a prefix" rule (``validation.pool_path_allowed``), as tables."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otherix.models.overlap import (
    OverlapHit,
    PoolPath,
    condition_message,
    first_overlap,
    overlaps_by_pool,
    path_relation,
    refusal_message,
)
from otherix.models.validation import path_allowed, paths_overlap, pool_path_allowed

RELATIONS = [
    ("/srv/p/x", "/srv/p/x", "same"),
    ("//srv/p/./x", "/srv/p/x", "same"),
    ("/srv/p/x/", "/srv/p//x", "same"),
    ("/srv/p/x/vms/a", "/srv/p/x", "inside"),
    ("/srv/p/x/scratch", "/srv/p/x/", "inside"),
    ("/srv/p", "/srv/p/x", "contains"),
    ("/", "/srv", "contains"),
    ("/srv", "/", "inside"),
    ("/", "/", "same"),
    ("/srv/p/a", "/srv/p/ab", None),
    ("/srv/p/ab", "/srv/p/a", None),
    ("/srv/p/a-b", "/srv/p/a", None),
    ("/srv/p/a", "/srv/q/a", None),
]


@pytest.mark.parametrize(("path", "other", "relation"), RELATIONS)
def test_path_relation(path, other, relation):
    assert path_relation(path, other) == relation
    assert (relation is not None) == paths_overlap(path, other)


def test_first_overlap_keeps_the_callers_order():
    pools = [PoolPath("1", "a", "/p/a"), PoolPath("2", "x", "/p/x"), PoolPath("3", "y", "/p/x/y")]
    assert first_overlap("/p/x/y/z", pools) == OverlapHit(pools[1], "inside")
    assert first_overlap("/p/b", pools) is None


def test_overlaps_by_pool_is_symmetric_and_leaves_clean_pools_out():
    pools = [
        PoolPath("o", "outer", "/p/o"),
        PoolPath("i", "inner", "/p/o/scratch/i"),
        PoolPath("t", "twin", "//p/o/"),
        PoolPath("f", "fine", "/p/ok"),
    ]
    got = overlaps_by_pool(pools)
    assert set(got) == {"o", "i", "t"}
    assert [(h.other.id, h.relation) for h in got["o"]] == [("i", "contains"), ("t", "same")]
    assert [(h.other.id, h.relation) for h in got["i"]] == [("o", "inside"), ("t", "inside")]
    assert [(h.other.id, h.relation) for h in got["t"]] == [("o", "same"), ("i", "contains")]


paths = st.lists(st.sampled_from(["a", "b", "ab", ".", ""]), max_size=4).map(
    lambda segs: "/" + "/".join(segs)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(paths, max_size=8))
def test_overlaps_by_pool_agrees_with_the_pairwise_rule(raw):
    pools = [PoolPath(str(i), f"p{i}", p) for i, p in enumerate(raw)]
    got = overlaps_by_pool(pools)
    for a in pools:
        want = [b.id for b in pools if b.id != a.id and paths_overlap(a.path, b.path)]
        assert [h.other.id for h in got.get(a.id, [])] == want
        for h in got.get(a.id, []):
            assert h.relation == path_relation(a.path, h.other.path)


def test_messages_name_the_other_pool():
    hit = OverlapHit(PoolPath("id-1", "x", "/srv/p/x"), "inside")
    text = refusal_message("/srv/p/x/vms/in", hit, "node-a")
    assert 'is inside the directory of storage pool "x" (id-1, path "/srv/p/x") on node node-a' in (
        text
    )
    assert 'storage pool "x" (id-1' in condition_message(hit)


PREFIX = "/var/lib/otherix/pools/"


@pytest.mark.security
@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/var/lib/otherix/pools/data", True),
        ("/var/lib/otherix/pools//data/", True),
        ("/var/lib/otherix/pools", False),  # the prefix itself: pools live below it
        ("/var/lib/otherix/pools/", False),
        ("//var/lib/otherix//pools/.", False),
        ("/var/lib/otherix/pools-evil/x", False),
        ("/etc", False),
    ],
)
def test_pool_path_allowed_is_strictly_below_a_prefix(path, allowed):
    assert pool_path_allowed(path, [PREFIX]) is allowed
    if allowed:
        assert path_allowed(path, [PREFIX])


def test_a_path_equal_to_any_prefix_is_refused_even_below_another():
    prefixes = ["/srv/", "/srv/pools/"]
    assert path_allowed("/srv/pools", prefixes)
    assert not pool_path_allowed("/srv/pools", prefixes)
    assert pool_path_allowed("/srv/pools/a", prefixes)
    assert not pool_path_allowed("/", ["/"])
    assert pool_path_allowed("/srv", ["/"])

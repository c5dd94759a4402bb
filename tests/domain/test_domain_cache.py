"""``domain.cache``: the pool's cache policy and which entries an eviction takes."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from otherix.domain.cache import (
    CacheConfigError,
    CacheEntry,
    CachePolicy,
    choose_evictions,
    parse_cache_config,
)

HOUR = 3600.0
NOW = 100 * HOUR


def entry(name: str, size: int, used_hours_ago: float, sha: str | None = None) -> CacheEntry:
    return CacheEntry(name, sha or name * 4, size, NOW - used_hours_ago * HOUR)


def names(chosen: Sequence[tuple[CacheEntry, str]]) -> list[tuple[str, str]]:
    return [(e.name, why) for e, why in chosen]


def test_defaults_keep_everything_until_the_pool_runs_low() -> None:
    assert parse_cache_config({}) == CachePolicy()
    assert parse_cache_config({"tier": "ssd"}) == CachePolicy(None, 10.0, 3600.0, frozenset())
    policy = parse_cache_config(
        {"cache": {"max_bytes": 100, "min_free_percent": 0, "min_age": "90s", "pinned": ["a"]}}
    )
    assert policy == CachePolicy(100, 0.0, 90.0, frozenset({"a"}))
    assert parse_cache_config({"cache": {"min_age": 30}}).min_age_s == 30.0
    assert parse_cache_config({"cache": {"min_age": "2h"}}).min_age_s == 7200.0


@pytest.mark.parametrize(
    ("cache", "field"),
    [
        ("big", "config.cache"),
        ({"max_byte": 1}, "config.cache.max_byte"),
        ({"max_bytes": -1}, "config.cache.max_bytes"),
        ({"max_bytes": True}, "config.cache.max_bytes"),
        ({"max_bytes": "50GiB"}, "config.cache.max_bytes"),
        ({"min_free_percent": 101}, "config.cache.min_free_percent"),
        ({"min_free_percent": "10"}, "config.cache.min_free_percent"),
        ({"min_age": "soon"}, "config.cache.min_age"),
        ({"min_age": -5}, "config.cache.min_age"),
        ({"pinned": "a.img"}, "config.cache.pinned"),
        ({"pinned": [""]}, "config.cache.pinned"),
    ],
)
def test_a_bad_cache_config_names_its_field(cache: object, field: str) -> None:
    with pytest.raises(CacheConfigError) as caught:
        parse_cache_config({"cache": cache})
    assert caught.value.field == field


def test_over_max_bytes_the_least_recently_used_go_until_it_fits() -> None:
    entries = [entry("new", 40, 2), entry("old", 40, 30), entry("mid", 40, 10)]
    policy = CachePolicy(max_bytes=80, min_free_percent=0)
    chosen = choose_evictions(
        entries, capacity=10_000, available=9_000, policy=policy, in_use=(), now=NOW
    )
    assert names(chosen) == [("old", "max_bytes")]  # 120 -> 80: one is enough
    policy = CachePolicy(max_bytes=0, min_free_percent=0)
    chosen = choose_evictions(
        entries, capacity=10_000, available=9_000, policy=policy, in_use=(), now=NOW
    )
    assert names(chosen) == [("old", "max_bytes"), ("mid", "max_bytes"), ("new", "max_bytes")]


def test_short_of_free_space_it_evicts_until_the_floor_is_back() -> None:
    entries = [entry("a", 300, 5), entry("b", 300, 4), entry("c", 300, 3)]
    # 10 % of 10,000 = 1,000 free wanted; 500 free now: two entries free 600 -> 1,100
    chosen = choose_evictions(
        entries, capacity=10_000, available=500, policy=CachePolicy(), in_use=(), now=NOW
    )
    assert names(chosen) == [("a", "min_free"), ("b", "min_free")]
    plenty = choose_evictions(
        entries, capacity=10_000, available=5_000, policy=CachePolicy(), in_use=(), now=NOW
    )
    assert plenty == []


def test_pinned_in_use_and_young_entries_are_never_chosen() -> None:
    entries = [
        entry("pinned", 10, 50),
        entry("running", 10, 50, sha="f" * 64),
        entry("backing", 10, 50),
        entry("young", 10, 0.5),
        entry("free", 10, 50),
    ]
    policy = CachePolicy(max_bytes=0, min_free_percent=0, pinned=frozenset({"pinned"}))
    chosen = choose_evictions(
        entries,
        capacity=1_000,
        available=1_000,
        policy=policy,
        in_use={"f" * 64, "backing"},
        now=NOW,
    )
    assert names(chosen) == [("free", "max_bytes")]


def test_prune_takes_every_evictable_entry_whatever_the_limits() -> None:
    entries = [entry("a", 10, 5), entry("b", 10, 6), entry("young", 10, 0)]
    chosen = choose_evictions(
        entries, capacity=0, available=0, policy=CachePolicy(), in_use=(), now=NOW, prune=True
    )
    assert names(chosen) == [("b", "prune"), ("a", "prune")]

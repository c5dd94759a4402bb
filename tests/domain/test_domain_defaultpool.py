"""Tests for otherix.domain.defaultpool: the provisioning plan, what blocks it, the
last-instance rule."""

from __future__ import annotations

import pytest

from otherix.domain.defaultpool import (
    Plan,
    last_default_message,
    obstacle,
    plan,
    removes_last_default,
)
from otherix.domain.overlap import OverlapHit, PoolPath

PREFIXES = ["/var/lib/otherix/pools/", "/srv/"]
OFF = "default pool provisioning is off (storage_pools.default_pool_name is empty)"


def below(name: str, prefix: str = PREFIXES[0]) -> str:
    return (
        f"storage_pools.default_pool_name {name!r} under prefix {prefix!r} does not "
        "give a path below an allowed prefix; nothing provisioned"
    )


PATTERN = "(must match [A-Za-z0-9][A-Za-z0-9._-]*)"


def not_a_name(name: str, problem: str) -> str:
    return (
        f"storage_pools.default_pool_name {name!r} is not a valid pool name ({problem}); "
        "nothing provisioned"
    )


@pytest.mark.parametrize(
    ("name", "prefixes", "expected"),
    [
        ("default", PREFIXES, Plan(None, "", "default", "/var/lib/otherix/pools/default")),
        ("Fast.1", ["/srv/"], Plan(None, "", "Fast.1", "/srv/Fast.1")),
        ("", PREFIXES, Plan("disabled", OFF)),
        (
            "a/b",
            PREFIXES,
            Plan(
                "invalid_name",
                not_a_name(
                    "a/b", 'invalid pool name "a/b" (must match [A-Za-z0-9][A-Za-z0-9._-]*)'
                ),
                "a/b",
            ),
        ),
        (
            "..",
            PREFIXES,
            Plan(
                "invalid_name",
                not_a_name("..", f'invalid pool name ".." {PATTERN}'),
                "..",
            ),
        ),
        (
            "a" * 256,
            PREFIXES,
            Plan(
                "invalid_name", not_a_name("a" * 256, "name is too long (max 255 runes)"), "a" * 256
            ),
        ),
        # a prefix without its slash glues onto the name: "/srvdefault" is below no prefix
        ("default", ["/srv"], Plan("invalid_name", below("default", "/srv"), "default")),
        # the first prefix is used even when a later one would do
        ("default", ["/srv", "/var/"], Plan("invalid_name", below("default", "/srv"), "default")),
        # the path lands on another allowed prefix itself
        (
            "pools",
            ["/srv/", "/srv/pools/"],
            Plan("invalid_name", below("pools", "/srv/"), "pools"),
        ),
    ],
)
def test_plan(name, prefixes, expected):
    assert plan(name, prefixes) == expected


A = PoolPath("id-a", "other", "/var/lib/otherix/pools/default")
B = PoolPath("id-b", "Default", "/srv/elsewhere")
C = PoolPath("id-c", "parent", "/var/lib/otherix")
D = PoolPath("id-d", "child", "/var/lib/otherix/pools/default/sub")
E = PoolPath("id-e", "sibling", "/var/lib/otherix/pools/default2")
PATH = "/var/lib/otherix/pools/default"


@pytest.mark.parametrize(
    ("existing", "found"),
    [
        ([], None),
        ([E], None),  # boundary-safe: default2 is not inside default
        ([B], B),  # the same name, case-insensitively
        ([A], OverlapHit(A, "same")),
        ([C], OverlapHit(C, "inside")),
        ([D], OverlapHit(D, "contains")),
        ([A, B], B),  # the name comes before the path
        ([E, D, C], OverlapHit(D, "contains")),  # the first overlap, in the caller's order
    ],
)
def test_obstacle(existing, found):
    assert obstacle("default", PATH, existing) == found


@pytest.mark.parametrize(
    ("default", "removed", "kept", "blocks"),
    [
        ("fast", ["fast"], [], True),
        ("Fast", ["fast"], [], True),  # names compare case-insensitively
        ("fast", ["FAST"], [], True),
        ("fast", ["fast"], ["fast"], False),  # another instance stays
        ("fast", ["fast"], ["FAST"], False),
        ("fast", ["slow"], [], False),  # the default is not among the removed
        ("fast", [], [], False),
        ("fast", ["slow", "fast"], ["slow"], True),
        ("fast", ["fast", "fast"], [], True),
    ],
)
def test_removes_last_default(default, removed, kept, blocks):
    assert removes_last_default(default, removed, kept) is blocks


def test_last_default_message():
    assert last_default_message("fast") == (
        'storage pool "fast" is the cluster default and this is its last instance; '
        "set another default first ('otherix cluster set-default-pool NAME') or unset it "
        "('otherix cluster unset-default-pool'), then delete it"
    )

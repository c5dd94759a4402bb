"""A pool's capacity in parts (domain.usage): other bytes, the overcommit ratio,
the name view's sums."""

from __future__ import annotations

import pytest

from otherix.domain.usage import Parts, sum_views, view

GiB = 1 << 30
FOUR = {"vm_disk_bytes": 1, "vm_provisioned_bytes": 1, "image_cache_bytes": 1, "scratch_bytes": 1}


def parts(disk: int = 0, prov: int = 0, cache: int = 0, scratch: int = 0) -> Parts:
    return Parts(disk, prov, cache, scratch)


@pytest.mark.parametrize(
    ("p", "capacity", "available", "other", "ratio"),
    [
        pytest.param(parts(10, 40, 5, 1), 100, 50, 34, 0.4, id="plain"),
        pytest.param(parts(60, 300, 0, 0), 100, 50, 0, 3.0, id="other-floored-at-0"),
        pytest.param(parts(1, 2, 0, 0), None, None, None, None, id="no-capacity"),
        pytest.param(parts(0, 5, 0, 0), 0, 0, 0, None, id="zero-capacity"),
        pytest.param(parts(0, 1, 0, 0), 3, 3, 0, 0.3333, id="ratio-4-decimals"),
    ],
)
def test_instance_view(p, capacity, available, other, ratio) -> None:
    v = view(p, capacity, available)
    assert v is not None
    assert v.other_bytes == other
    assert v.overcommit_ratio == ratio
    assert v.to_dict()["vm_disk_bytes"] == p.vm_disk_bytes


def test_no_parts_no_view() -> None:
    assert view(None, 100, 50) is None
    assert sum_views([None, None]) is None


@pytest.mark.parametrize(
    "raw",
    [
        None,
        {},
        {"vm_disk_bytes": 1},
        {**FOUR, "scratch_bytes": -1},
        {**FOUR, "vm_disk_bytes": True},
    ],
)
def test_a_stored_usage_that_is_not_four_counts_is_none(raw) -> None:
    assert Parts.from_mapping(raw) is None


def test_name_view_sums_instances_that_have_a_usage() -> None:
    a = view(parts(10 * GiB, 100 * GiB, GiB, 0), 100 * GiB, 50 * GiB)
    b = view(parts(5 * GiB, 50 * GiB, GiB, GiB), 100 * GiB, 80 * GiB)
    total = sum_views([a, None, b])
    assert total is not None
    assert total.parts == parts(15 * GiB, 150 * GiB, 2 * GiB, GiB)
    assert total.other_bytes == (100 - 50 - 11) * GiB + (100 - 80 - 7) * GiB
    assert total.overcommit_ratio == 0.75

"""``domain.scrub``: the ``config.scrub`` parser, the schedule and the pace, by table."""

from __future__ import annotations

from typing import Any

import pytest

from otherix.domain.scrub import (
    DEFAULT_MAX_BYTES_PER_SECOND,
    ScrubConfigError,
    ScrubPolicy,
    pace,
    parse_scrub_config,
    scrub_due,
)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (None, ScrubPolicy()),
        ({}, ScrubPolicy()),
        ({"scrub": {}}, ScrubPolicy()),
        ({"scrub": {"interval": "12h"}}, ScrubPolicy(interval_s=43200.0)),
        ({"scrub": {"interval": "0"}}, ScrubPolicy(interval_s=0.0)),
        ({"scrub": {"interval": 0}}, ScrubPolicy(interval_s=0.0)),
        (
            {"scrub": {"max_bytes_per_second": 1024}},
            ScrubPolicy(max_bytes_per_second=1024),
        ),
    ],
)
def test_parse(config: Any, expected: ScrubPolicy) -> None:
    assert parse_scrub_config(config) == expected


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([], "config.scrub"),
        ({"every": "1d"}, "config.scrub.every"),
        ({"interval": "soon"}, "config.scrub.interval"),
        ({"interval": -1}, "config.scrub.interval"),
        ({"interval": True}, "config.scrub.interval"),
        ({"max_bytes_per_second": 0}, "config.scrub.max_bytes_per_second"),
        ({"max_bytes_per_second": 1.5}, "config.scrub.max_bytes_per_second"),
        ({"max_bytes_per_second": "64M"}, "config.scrub.max_bytes_per_second"),
    ],
)
def test_parse_refuses(raw: Any, field: str) -> None:
    with pytest.raises(ScrubConfigError) as info:
        parse_scrub_config({"scrub": raw})
    assert info.value.field == field


@pytest.mark.parametrize(
    ("interval", "last", "now", "due"),
    [
        (3600.0, None, 100.0, True),
        (3600.0, 0.0, 3599.0, False),
        (3600.0, 0.0, 3600.0, True),
        (0.0, None, 100.0, False),
    ],
)
def test_scrub_due(interval: float, last: float | None, now: float, due: bool) -> None:
    assert scrub_due(ScrubPolicy(interval_s=interval), last, now) is due


def test_pace() -> None:
    assert pace(10 * DEFAULT_MAX_BYTES_PER_SECOND, 4.0, DEFAULT_MAX_BYTES_PER_SECOND) == 6.0
    assert pace(100, 5.0, 100) == 0.0

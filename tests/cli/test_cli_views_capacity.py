"""The trend line of ``pool get`` and ``pool history`` (``cli.views.capacity``), by table."""

from __future__ import annotations

import pytest

from otherix.cli.views.capacity import full_in_text, has_samples, trend_text

GiB = 1 << 30


@pytest.mark.parametrize(
    ("days", "text"),
    [
        (0, "now"),
        (-1, "now"),
        (0.0001, "under a minute"),
        (0.01, "~14 minutes"),
        (0.5, "~12 hours"),
        (2.9, "~3 days"),
        (1234.4, "~1,234 days"),
    ],
)
def test_full_in(days, text) -> None:
    assert full_in_text(days) == text


@pytest.mark.parametrize(
    ("trend", "text"),
    [
        ({"state": "filling", "bytes_per_day": 1.2 * GiB, "days_to_full": 3.2}, None),
        ({"state": "not_filling", "bytes_per_day": -0.1 * GiB}, "-0.10 GiB/day, not filling"),
        ({"state": "not_filling", "bytes_per_day": 0.0}, "+0.00 GiB/day, not filling"),
        (
            {"state": "unknown", "samples": 2},
            "unknown (2 samples; needs 3 over 2 sample intervals)",
        ),
        (None, "-"),
    ],
)
def test_trend_text(trend, text) -> None:
    expected = text or "+1.20 GiB/day, full in ~3 days"
    assert trend_text(trend) == expected


def test_the_line_waits_for_a_sample() -> None:
    assert not has_samples(None)
    assert not has_samples({"state": "unknown", "samples": 0})
    assert has_samples({"state": "unknown", "samples": 1})

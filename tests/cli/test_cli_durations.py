"""Duration parsing (``--ttl``, ``--expires-in``) and Go-style printing (``1m0s``)."""

from __future__ import annotations

import pytest

from otherix.cli.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("24h", 86400),
        ("1h30m", 5400),
        ("7d", 604800),
        ("45s", 45),
        ("500ms", 0.5),
        ("90", 90),
        (" 2M ", 120),
        ("1.5h", 5400),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "10x", "1h 30m", "-5s", "tomorrow"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (60, "1m0s"),
        (0.3, "300ms"),
        (0.25, "250ms"),
        (2, "2s"),
        (90, "1m30s"),
        (3600, "1h0m0s"),
        (3725, "1h2m5s"),
        (1.5, "1.5s"),
        (0, "0s"),
    ],
)
def test_format_duration_matches_go(seconds, text):
    assert format_duration(seconds) == text

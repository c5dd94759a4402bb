"""otherix.durations: the one grammar (CLI ``--ttl``, config ``Duration``) and Go-style printing."""

from __future__ import annotations

import re

import pytest

from otherix.config import parse_duration as config_duration
from otherix.durations import format_duration, parse_duration


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


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30 s", 30),  # the config files allowed a space before the unit
        ("1h30m", 5400),
        ("5M", 300),
        (" 1.5 h ", 5400),
    ],
)
def test_union_of_the_old_grammars_is_accepted(text, seconds):
    assert parse_duration(text) == seconds
    assert config_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("30x", "invalid duration '30x' (use e.g. 30s, 5m, 1h, 7d)"),
        ("-5s", "invalid duration '-5s' (use e.g. 30s, 5m, 1h, 7d)"),
        ("1h 30m", "invalid duration '1h 30m' (use e.g. 30s, 5m, 1h, 7d)"),
        (True, "duration must be a number of seconds or like 30s, 5m, 1h, 7d"),
        ([1], "invalid duration [1] (use e.g. 30s, 5m, 1h, 7d)"),
        (-1, "duration must not be negative"),
    ],
)
def test_config_duration_keeps_its_messages(value, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        config_duration(value)


def test_config_duration_takes_numbers_as_seconds():
    assert config_duration(90) == 90.0
    assert config_duration(0.5) == 0.5


CLI_MESSAGE = 'invalid duration "soon" (use a number with a unit: ms, s, m, h or d, e.g. 24h)'


def test_cli_message_names_the_units():
    with pytest.raises(ValueError, match="^" + re.escape(CLI_MESSAGE) + "$"):
        parse_duration("soon")

"""Tests for otherix.models.jsonrepair: what migration 0008 (text repair) and the store's
JSON reader do to a stored value that breaks today's input rules."""

from __future__ import annotations

import json

import pytest

from otherix.models.jsonrepair import Repairs, may_hold_lone_surrogate, repair_text, repair_value
from otherix.models.strictjson import MAX_DEPTH, decode


def deep(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


def wrap(value: object, levels: int) -> object:
    for _ in range(levels):
        value = [value]
    return value


CASES = [
    # (stored text, repaired value, counts)
    ('{"a": "\\ud800"}', {"a": "\ufffd"}, Repairs(surrogates=1)),
    ('{"a": "x\\udc00y\\ud800"}', {"a": "x\ufffdy\ufffd"}, Repairs(surrogates=2)),
    ('{"\\ud800": 1, "b": ["\\udfff"]}', {"\ufffd": 1, "b": ["\ufffd"]}, Repairs(surrogates=2)),
    (
        '{"a": NaN, "b": [Infinity, -Infinity]}',
        {"a": None, "b": [None, None]},
        Repairs(non_finite=3),
    ),
    (
        '{"a": "\\ud800", "n": NaN}',
        {"a": "\ufffd", "n": None},
        Repairs(surrogates=1, non_finite=1),
    ),
    # {"c": 70 arrays}: the object is level 1, so the 64th array is level 65 and is
    # kept as its text (7 arrays around 1), under the 63 arrays above it
    (json.dumps({"c": json.loads(deep(70))}), {"c": wrap(deep(7), 63)}, Repairs(too_deep=1)),
]


@pytest.mark.parametrize(("text", "value", "counts"), CASES, ids=range(len(CASES)))
def test_repair_text(text, value, counts):
    repaired, got = repair_text(text)
    assert repaired is not None
    assert json.loads(repaired) == value
    assert got == counts
    decode(repaired.encode())  # what is left passes strict input: no 500 can come of it


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "plain", "b": [1, 2.5, null, true]}',
        '{"a": "\\ud83d\\ude00"}',  # a pair is one valid character
        '{"a": "NaN and Infinity are words here"}',
        '{"a": "C:\\\\users\\\\ud800"}',  # text, not an escape
        deep(MAX_DEPTH),
        "{}",
    ],
)
def test_valid_values_are_left_alone(text):
    assert repair_text(text) == (None, Repairs())


def test_a_value_past_the_parser_s_recursion_limit_is_cut_on_the_text():
    """Stored before the limit, 5,000 levels parse nowhere: the cut works on the text."""
    text = '{"config": {"a": ' + deep(5000) + "}}"
    repaired, counts = repair_text(text)
    assert counts == Repairs(too_deep=1)
    assert repaired is not None
    value = decode(repaired.encode())
    node = value["config"]["a"]
    for _ in range(MAX_DEPTH - 3):
        node = node[0]
    assert isinstance(node[0], str)  # the 65th level is kept as its JSON text
    assert node[0].startswith("[[[")
    assert node[0].count("[") == 5000 - (MAX_DEPTH - 3) - 1


def test_repair_value_in_place_and_colliding_keys():
    stored = json.loads('{"\\ud800": 1, "\\ufffd": 2, "x": [1.0, NaN]}')
    value, counts = repair_value(stored)
    assert value == {"\ufffd": 2, "x": [1.0, None]}  # the later key wins
    assert counts == Repairs(surrogates=1, non_finite=1)
    assert "1 unpaired surrogate(s) replaced with U+FFFD" in counts.describe()


@pytest.mark.parametrize(
    ("text", "may"),
    [
        ("{}", False),
        ('{"a": "\\u00e9"}', False),
        ('{"a": "\\ud83d\\ude00"}', False),
        ('{"a": "\\ud800"}', True),
        ('{"a": "\\\\ud800\\udc00"}', True),  # escaped backslash: suspect, checked by parsing
    ],
)
def test_may_hold_lone_surrogate(text, may):
    assert may_hold_lone_surrogate(text) is may

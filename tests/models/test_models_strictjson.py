"""Tests for otherix.models.strictjson and textrules: the input rules, by table and
by property.

The property compares ``decode`` with a slow reference (``json.loads`` plus a
walk of every value): the fast path skips the walk unless the text looks
suspect, so a wrong shortcut would show up as a body the reference refuses
and ``decode`` accepts.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otherix.models.strictjson import INT64_MAX, MAX_DEPTH, JsonRefused, MalformedJson, decode
from otherix.models.textrules import percent_decode, text_problem


def nest(depth: int, inner: str = "1") -> bytes:
    """``depth`` arrays inside each other around ``inner``."""
    return ("[" * depth + inner + "]" * depth).encode()


ACCEPTED: list[tuple[bytes, Any]] = [
    (b'{"a": "plain"}', {"a": "plain"}),
    (b'{"a": "\\ud83d\\ude00"}', {"a": "\U0001f600"}),  # a surrogate pair is one scalar
    (b'{"a": "\\uD83D\\uDE00"}', {"a": "\U0001f600"}),
    ('{"a": "é \U0001f600"}'.encode(), {"a": "é \U0001f600"}),
    (b'{"a": "C:\\\\users"}', {"a": "C:\\users"}),  # an escaped backslash before "u"
    (b'{"a": "\\\\ud800"}', {"a": "\\ud800"}),  # the text "\ud800", not an escape
    (f'{{"a": {INT64_MAX}}}'.encode(), {"a": INT64_MAX}),
    (f'{{"a": {-INT64_MAX}}}'.encode(), {"a": -INT64_MAX}),
    (
        b'{"a": 1.5e18, "b": -0.0, "c": 1e-400, "d": 0.5}',
        {"a": 1.5e18, "b": -0.0, "c": 0.0, "d": 0.5},
    ),
    (b'{"digits": "12345678901234567890123"}', {"digits": "12345678901234567890123"}),
    (b'{"a": 1, "b": {"a": 2}}', {"a": 1, "b": {"a": 2}}),  # the same key in two objects
    (nest(MAX_DEPTH), json.loads(nest(MAX_DEPTH))),
    (nest(MAX_DEPTH - 1), json.loads(nest(MAX_DEPTH - 1))),
    (b'{"k": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', None),
    (b'"\\u00e9"', "é"),
    (b"  [] ", []),
]


@pytest.mark.parametrize(("raw", "value"), ACCEPTED, ids=range(len(ACCEPTED)))
def test_accepted(raw, value):
    got = decode(raw)
    assert got == (json.loads(raw) if value is None else value)


REFUSED: list[tuple[bytes, str, str]] = [
    # (body, field, reason fragment)
    (b'{"config": {"a": "\\ud800"}}', "config.a", "unpaired surrogate U+D800 at character 0"),
    (b'{"a": "x\\udc00"}', "a", "unpaired surrogate U+DC00 at character 1"),
    (b'{"a": "\\udc00\\ud800"}', "a", "unpaired surrogate U+DC00"),  # the wrong order
    (b'{"a": "\\ud800\\ud800\\udc00"}', "a", "unpaired surrogate U+D800"),
    (b'{"a": "\\\\\\ud800"}', "a", "unpaired surrogate"),  # an escaped backslash, then one
    (b'{"a": "\\\\ud800\\udc00"}', "a", "unpaired surrogate U+DC00"),
    (b'{"\\udfff": 1}', "\\udfff", "U+DFFF at character 0) in the key"),
    (b'{"spec": ["ok", "\\ud800"]}', "spec.1", "unpaired surrogate"),
    (b'"\\ud800"', "", "unpaired surrogate"),
    (b'{"a": "\xff"}', "a", "not valid UTF-8 (byte 0xFF at character 0)"),
    (b'{"a": "\xed\xa0\x80"}', "a", "not valid UTF-8"),  # a surrogate encoded as UTF-8
    (b'{"a": "\xc0\xaf"}', "a", "not valid UTF-8"),  # an overlong encoding
    (b'{"a": "x\\u0000"}', "a", "U+0000 (NUL)"),
    (b'{"a\\u0000": 1}', "a\\u0000", "U+0000 (NUL)"),
    (b'{"a": NaN}', "a", "NaN is not JSON"),
    (b'{"a": [1, Infinity]}', "a.1", "Infinity is not JSON"),
    (b'{"a": -Infinity}', "a", "-Infinity is not JSON"),
    (b'{"a": 1e400}', "a", "number out of range"),
    (b'{"a": -1e400}', "a", "number out of range"),
    (b'{"a": 1.5e300}', "a", "number out of range"),
    (b'{"a": 9.3e18}', "a", "number out of range"),
    (f'{{"a": {INT64_MAX + 1}}}'.encode(), "a", "integer out of range"),
    (f'{{"a": {-INT64_MAX - 1}}}'.encode(), "a", "integer out of range"),
    (f'{{"a": {2**64}}}'.encode(), "a", "integer out of range"),
    (b'{"a": ' + b"9" * 5000 + b"}", "a", "integer out of range"),  # past int()'s limit
    (b'{"a": 1, "a": 2}', "a", "duplicate key"),
    (b'{"b": {"c": 1, "d": 2, "c": 3}}', "b.c", "duplicate key"),
    (nest(MAX_DEPTH + 1), ".".join(["0"] * MAX_DEPTH), "nested deeper than 64 levels"),
    (
        b'{"config": {"a": ' + nest(10_000) + b"}}",
        "config.a" + ".0" * (MAX_DEPTH - 2),
        "nested deeper than 64 levels",
    ),
    (
        b'{"x": "[[[", "c": ' + b'{"a": ' * 70 + b"1" + b"}" * 70 + b"}",
        "c" + ".a" * (MAX_DEPTH - 1),
        "nested deeper",
    ),
]


@pytest.mark.parametrize(("raw", "field", "reason"), REFUSED, ids=range(len(REFUSED)))
def test_refused_names_the_value(raw, field, reason):
    with pytest.raises(JsonRefused) as info:
        decode(raw)
    assert info.value.field == field
    assert reason in info.value.reason
    # the refusal itself must be encodable: it is what the client receives
    json.dumps({"field": info.value.field, "reason": info.value.reason}).encode("utf-8")
    info.value.field.encode("utf-8")


@pytest.mark.parametrize("raw", [b"{", b"", b"\xff", b"[1,]", b"{'a': 1}", b"\xef\xbb\xbf{}"])
def test_malformed(raw):
    with pytest.raises(MalformedJson):
        decode(raw)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("plain", None),
        ("é\U0001f600", None),
        ("a\x00", "U+0000"),
        ("\ud800", "unpaired surrogate U+D800"),
        ("ok\udfff", "U+DFFF at character 2"),
    ],
)
def test_text_problem(text, problem):
    got = text_problem(text)
    assert (got is None) if problem is None else (problem in (got or ""))


@pytest.mark.parametrize(
    ("raw", "text", "problem"),
    [
        (b"node-a", "node-a", None),
        (b"a+b", "a b", None),
        (b"%C3%A9", "é", None),
        (b"%F0%9F%98%80", "\U0001f600", None),
        (b"%ED%A0%80", None, "encodes a surrogate"),
        (b"%FF", None, "byte 0xFF"),
        (b"%C0%AF", None, "byte 0xC0"),
        (b"a%00b", None, "U+0000"),
        ("é".encode(), None, "raw byte above 0x7F"),
    ],
)
def test_percent_decode(raw, text, problem):
    got, why = percent_decode(raw, plus_is_space=True)
    if problem is None:
        assert (got, why) == (text, None)
    else:
        assert why is not None
        assert problem in why
        got.encode("utf-8")  # shown escaped, printable


# the property ---------------------------------------------------------------------------


def reference_problem(value: Any, depth: int = 1) -> bool:
    """True when the value (as ``json.loads`` gives it) breaks a rule."""

    def bad_text(s: str) -> bool:
        return "\x00" in s or any(0xD800 <= ord(c) <= 0xDFFF for c in s)

    if isinstance(value, dict | list):
        if depth > MAX_DEPTH:
            return True
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return any(
            (isinstance(k, str) and bad_text(k)) or reference_problem(v, depth + 1)
            for k, v in items
        )
    if isinstance(value, str):
        return bad_text(value)
    if isinstance(value, bool) or value is None:
        return False
    return not -INT64_MAX <= value <= INT64_MAX  # NaN compares False: refused


CHARS = st.one_of(
    st.sampled_from(["a", "\\", '"', "u", "é", "\U0001f600", "\x00", "\ud800", "\udc00", "\x7f"]),
    st.integers(0, 0x10FFFF).map(chr),
)
TEXT = st.text(CHARS, max_size=6)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    TEXT,
    st.integers(-(2**70), 2**70),
    st.sampled_from([INT64_MAX, INT64_MAX + 1, -INT64_MAX, -INT64_MAX - 1, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=12,
)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, Any]:
    value = draw(VALUES)
    for _ in range(draw(st.sampled_from([0, 0, 0, MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH]))):
        value = [value]
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass"), value


@settings(
    max_examples=600,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(bodies())
def test_decode_agrees_with_the_reference(body):
    raw, _ = body
    expected_bad = reference_problem(json.loads(raw.decode("utf-8", "surrogatepass")))
    try:
        got = decode(raw)
    except JsonRefused:
        assert expected_bad, raw
        return
    assert not expected_bad, raw
    assert got == json.loads(raw)
    assert json.dumps(got, ensure_ascii=False).encode("utf-8")  # encodable: no surrogate left

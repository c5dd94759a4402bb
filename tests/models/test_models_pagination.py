"""Tests for otherix.models.pagination: cursor round trip, strict decoding, limits."""

from __future__ import annotations

import base64
import contextlib
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otherix.models.pagination import InvalidCursor, clamp_limit, decode_cursor, encode_cursor

PROPS = settings(max_examples=200, deadline=None)
ID = "0b6f3a52-7c1e-4d2a-9f3b-1a2b3c4d5e6f"
WHEN = datetime(2024, 5, 1, 12, 30, 45, 123456, tzinfo=UTC)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


# --- round trip ---


def test_round_trip_exact():
    cursor = encode_cursor(WHEN, ID)
    assert decode_cursor(cursor) == (WHEN, ID)
    decoded, _ = decode_cursor(cursor)
    assert decoded.tzinfo is not None
    assert decoded.utcoffset() == timedelta(0)


def test_cursor_is_urlsafe_and_unpadded():
    cursor = encode_cursor(WHEN, ID)
    assert "=" not in cursor
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_zero_microseconds_survive():
    when = WHEN.replace(microsecond=0)
    assert decode_cursor(encode_cursor(when, ID)) == (when, ID)


def test_non_utc_offset_is_normalised_to_utc():
    plus_two = timezone(timedelta(hours=2))
    local = WHEN.astimezone(plus_two)
    decoded, _ = decode_cursor(encode_cursor(local, ID))
    assert decoded == local
    assert decoded.utcoffset() == timedelta(0)


def test_encode_rejects_naive_datetime_and_non_uuid():
    with pytest.raises(ValueError, match="timezone-aware"):
        encode_cursor(datetime(2024, 1, 1), ID)
    with pytest.raises(ValueError, match="UUID"):
        encode_cursor(WHEN, "default")


_AWARE = st.datetimes(
    min_value=datetime(1970, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    ),
)


@PROPS
@given(_AWARE, st.uuids(version=4))
def test_round_trip_property(when, ident):
    decoded_when, decoded_id = decode_cursor(encode_cursor(when, str(ident)))
    assert decoded_when == when
    assert decoded_when.microsecond == when.astimezone(UTC).microsecond
    assert decoded_id == str(ident)


# --- strict decoding ---


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not base64!",
        "abc=",  # padding is not part of the format
        "a",  # impossible base64 length
        "A" * 513,
        _b64("2024-05-01T12:30:45.123456+00:00"),  # no separator
        _b64(f"2024-05-01T12:30:45.123456+00:00|{ID}|extra"),
        _b64(f"2024-05-01T12:30:45.123456|{ID}"),  # naive
        _b64(f"2024-05-01T12:30:45+00:00|{ID}"),  # no microseconds
        _b64(f"2024-05-01T12:30:45.123456+02:00|{ID}"),  # not UTC
        _b64(f"2024-13-01T12:30:45.123456+00:00|{ID}"),  # month 13
        _b64(f"0000-01-01T00:00:00.000000+00:00|{ID}"),  # year 0
        _b64("2024-05-01T12:30:45.123456+00:00|default"),
        _b64("2024-05-01T12:30:45.123456+00:00|"),
        _b64(f"|{ID}"),
        _b64(f"2024-05-01T12:30:45.123456+00:00 |{ID}"),
        base64.urlsafe_b64encode(b"\xff\xfe|x").rstrip(b"=").decode(),  # not text
        _b64(f"２０２４-05-01T12:30:45.123456+00:00|{ID}"),  # fullwidth digits
    ],
)
def test_decode_rejects_malformed(cursor):
    with pytest.raises(InvalidCursor, match="invalid cursor"):
        decode_cursor(cursor)


def test_invalid_cursor_is_a_value_error():
    assert issubclass(InvalidCursor, ValueError)


@PROPS
@given(st.text(max_size=600))
def test_decode_random_text_only_raises_invalid_cursor(text):
    with contextlib.suppress(InvalidCursor):
        decode_cursor(text)


@PROPS
@given(st.binary(max_size=200))
def test_decode_random_base64_only_raises_invalid_cursor(raw):
    with contextlib.suppress(InvalidCursor):
        decode_cursor(base64.urlsafe_b64encode(raw).rstrip(b"=").decode())


def test_uuid4_round_trip_smoke():
    ident = str(uuid.uuid4())
    assert decode_cursor(encode_cursor(WHEN, ident))[1] == ident


# --- limit ---


@pytest.mark.parametrize(
    ("limit", "expected"),
    [(None, 50), (1, 1), (50, 50), (199, 199), (200, 200), (201, 200), (10_000, 200)],
)
def test_clamp_limit(limit, expected):
    assert clamp_limit(limit) == expected


@pytest.mark.parametrize("limit", [0, -1, -200])
def test_clamp_limit_rejects_below_one(limit):
    with pytest.raises(ValueError, match=r"^limit must be at least 1$"):
        clamp_limit(limit)


def test_clamp_limit_custom_default_and_maximum():
    assert clamp_limit(None, default=20) == 20
    assert clamp_limit(500, maximum=100) == 100

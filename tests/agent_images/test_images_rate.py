"""The download rate floor: the pure rule as a table, then real slow sources.

``RateFloor`` is fed made-up (time, bytes) samples; the end-to-end tests run
``ImageCache.ensure_image`` against the real HTTP origin of the conftest with
short windows (the settings a test may set), so a dripping source, one that
stalls after its headers and one that stalls half-way each fail with
``download_too_slow`` and the rate seen, and leave nothing in the pool.
"""

from __future__ import annotations

import os

import pytest

from otherix.agent.images import ImageError
from otherix.agent.images.rate import RateFloor, human_rate

KiB = 1024


def nothing_written(pool) -> bool:
    return os.listdir(pool / "images") == [] and os.listdir(pool / "scratch") == []


# --- the rule -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("samples", "verdict"),
    [
        # (time, total bytes) after start(0.0); verdict: None, or (rate, seconds) at the last
        pytest.param([(5.0, 0), (9.9, 0)], None, id="no check before a whole window"),
        pytest.param([(10.0, 0)], (0.0, 10.0), id="stalled from the start"),
        pytest.param([(10.0, 10 * 64 * KiB)], None, id="exactly the floor passes"),
        pytest.param([(10.0, 10 * 64 * KiB - 1)], (65535.9, 10.0), id="one byte short"),
        pytest.param([(9.0, 0), (10.0, 2 << 20)], None, id="slow start, then fast: passes"),
        pytest.param(
            [(5.0, 5 << 20), (10.0, 10 << 20), (15.0, 10 << 20), (20.0, 10 << 20)],
            (0.0, 10.0),
            id="stalls half-way: caught one window after the stall",
        ),
        pytest.param(
            [(5.0, 5 << 20), (10.0, 10 << 20), (15.0, 10 << 20)],
            None,
            id="half a window of stall: the average still passes",
        ),
        pytest.param([(10.0, 300), (20.0, 600)], (30.0, 10.0), id="one byte in 33 ms"),
    ],
)
def test_floor_table(samples, verdict):
    floor = RateFloor(64 * KiB, 10.0)
    floor.start(0.0)
    got = None
    for now, size in samples:
        got = floor.check(now, size)
    if verdict is None:
        assert got is None, got
    else:
        rate, seconds = verdict
        assert got is not None
        assert (got.rate, got.seconds) == (rate, seconds)
        assert (got.min_rate, got.window) == (64 * KiB, 10.0)


def test_restart_rearms_the_floor():
    floor = RateFloor(1000, 1.0)
    floor.start(0.0)
    assert floor.check(1.0, 0) is not None
    floor.start(5.0)  # a new connection (a redirect hop)
    assert floor.check(5.5, 0) is None


def test_floor_needs_positive_numbers():
    with pytest.raises(ValueError, match="positive"):
        RateFloor(0, 30.0)


@pytest.mark.parametrize(
    ("rate", "shown"),
    [(0.0, "0 B/s"), (0.4, "0.4 B/s"), (65536, "64 KiB/s"), (1.5 * (1 << 20), "1.5 MiB/s")],
)
def test_human_rate(rate, shown):
    assert human_rate(rate) == shown


# --- real slow sources --------------------------------------------------------------


def slow_cache(make_cache, **kw):
    base = {"min_rate_bytes_per_second": 4 * KiB, "min_rate_window": 0.5, "read_timeout": 10.0}
    return make_cache(**{**base, **kw})


def too_slow(cache, pool, url) -> ImageError:
    with pytest.raises(ImageError) as err:
        cache.ensure_image(pool, url)
    assert err.value.code == "download_too_slow", err.value
    assert not err.value.retryable
    assert nothing_written(pool)
    return err.value


def test_a_dripping_source_is_too_slow(make_cache, origin, pool):
    url = origin.serve("/drip.img", b"d" * 100_000, drip=0.01)  # about 100 B/s
    err = too_slow(slow_cache(make_cache), pool, url)
    details = err.details
    assert 0 < details["rate_bytes_per_second"] < 4 * KiB
    assert details["window_seconds"] >= 0.5
    assert details["min_rate_bytes_per_second"] == 4 * KiB
    assert details["min_rate_window_seconds"] == 0.5
    assert 0 < details["bytes_in_window"] <= details["bytes_done"] < 100_000
    assert f"sent {details['bytes_in_window']} bytes in the last" in err.message
    assert "below the minimum of 4 KiB/s averaged over 0.5s" in err.message
    assert "images.min_rate_bytes_per_second" in err.message


def test_a_source_stalled_after_its_headers_is_too_slow(make_cache, origin, pool):
    """Headers, then nothing: the read timeout (10 s) is not what ends it."""
    url = origin.serve("/stall.img", b"s" * 100_000, hang=True)
    err = too_slow(slow_cache(make_cache), pool, url)
    assert err.details["rate_bytes_per_second"] == 0
    assert err.details["bytes_done"] == 0
    assert "(0 B/s)" in err.message


def test_a_source_stalled_half_way_is_too_slow(make_cache, origin, pool):
    url = origin.serve("/half.img", b"h" * 200_000, stall_after=100_000)
    err = too_slow(slow_cache(make_cache), pool, url)
    assert err.details["bytes_done"] == 100_000
    assert err.details["bytes_in_window"] == 0


def test_a_body_without_length_cut_for_slowness_is_not_mistaken_for_complete(
    make_cache, origin, pool
):
    url = origin.serve("/drip.img", b"d" * 100_000, drip=0.01, content_length=False)
    too_slow(slow_cache(make_cache), pool, url)


def test_a_slow_start_within_the_window_is_not_punished(make_cache, origin, pool):
    data = os.urandom(256 * KiB)
    url = origin.serve("/late.img", data, first_byte_delay=0.3)
    img = slow_cache(make_cache, min_rate_window=1.0).ensure_image(pool, url)
    assert img.size_bytes == len(data)


def test_a_slow_source_above_the_floor_completes(make_cache, origin, pool):
    data = os.urandom(1 << 20)
    url = origin.serve("/steady.img", data, chunk_delay=0.05)  # about 1.2 MiB/s for 0.8 s
    img = slow_cache(make_cache, min_rate_window=0.2).ensure_image(pool, url)
    assert img.size_bytes == len(data)


def test_zero_turns_the_floor_off(make_cache, origin, pool):
    url = origin.serve("/drip.img", b"d" * 150, drip=0.005)  # about 0.75 s at 200 B/s
    cache = slow_cache(make_cache, min_rate_bytes_per_second=0, min_rate_window=0.1)
    assert cache.ensure_image(pool, url).size_bytes == 150
    assert os.listdir(pool / "scratch") == []


def test_the_total_timeout_still_wins_when_it_comes_first(make_cache, origin, pool):
    url = origin.serve("/drip.img", b"d" * 100_000, drip=0.01)
    cache = slow_cache(make_cache, min_rate_window=5.0, total_timeout=0.3)
    with pytest.raises(ImageError) as err:
        cache.ensure_image(pool, url)
    assert err.value.code == "download_failed"
    assert err.value.message == "timed out: download not finished after 0.3s"
    assert nothing_written(pool)

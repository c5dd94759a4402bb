"""Pull policies end to end (contract §2.5's IfNotPresent table, ``always``) and
image collisions, against a real HTTP origin; plus the pure decision tables."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from otherix.agent.images import ImageError
from otherix.agent.images.cache import decide, settle
from otherix.agent.images.entries import Entry, Source

A = "a" * 64
B = "b" * 64
URL = "http://h/x.img"
OTHER = "http://mirror/x.img"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(sha256: str = A, urls: tuple[str, ...] = (URL,)) -> Entry:
    source = None
    if urls:
        source = Source(urls[0], sha256, "raw", 1, 1, "2024-01-01T00:00:00Z", urls[1:])
    return Entry("x.img", None, sha256, 1, 0.0, source)  # type: ignore[arg-type]


# --- pure tables ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cached", "url", "pin", "policy", "action"),
    [
        (None, URL, None, "if-not-present", "download"),
        (entry(), URL, None, "if-not-present", "hit"),
        (entry(), OTHER, None, "if-not-present", "download"),  # compare after download
        (entry(urls=(URL, OTHER)), OTHER, None, "if-not-present", "hit"),  # known alias
        (entry(urls=()), URL, None, "if-not-present", "download"),  # no .source: URL unknown
        (None, URL, A, "if-not-present", "download"),
        (entry(), URL, A, "if-not-present", "verify"),
        (entry(), OTHER, A, "if-not-present", "verify"),  # same content whoever asks
        (entry(), URL, B, "if-not-present", "download"),  # replace
        (entry(), OTHER, B, "if-not-present", "collision"),  # no download at all
        (None, URL, None, "always", "download"),
        (entry(), URL, None, "always", "download"),
        (entry(), URL, A, "always", "download"),
        (entry(), OTHER, B, "always", "collision"),
    ],
)
def test_decide(cached, url, pin, policy, action):
    assert decide(cached, url, pin, policy) == action


@pytest.mark.parametrize(
    ("cached", "url", "got", "outcome"),
    [
        (None, URL, A, "store"),
        (entry(), URL, A, "same"),
        (entry(), OTHER, A, "same"),
        (entry(), URL, B, "store"),
        (entry(), OTHER, B, "collision"),
        (entry(urls=()), URL, B, "collision"),  # unknown origin: protected
    ],
)
def test_settle(cached, url, got, outcome):
    assert settle(cached, url, got) == outcome


# --- IfNotPresent, row by row --------------------------------------------------------


def cached_and_damaged(cache, origin, pool, body: bytes) -> tuple[str, Path]:
    """``/ubuntu.qcow2`` served and cached, then its last byte flipped behind the cache's
    back (same size, so only a re-hash can tell); the URL and the cached file."""
    url = origin.serve("/ubuntu.qcow2", body)
    cache.ensure_image(pool, url)
    path = pool / "images" / "ubuntu.qcow2"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    return url, path


def files(pool):
    return sorted(os.listdir(pool / "images")), sorted(os.listdir(pool / "scratch"))


def test_unpinned_absent_downloads_hashes_and_stores(cache, origin, pool, qcow2):
    url = origin.serve("/img/ubuntu.qcow2", qcow2)
    img = cache.ensure_image(pool, url)
    assert img.downloaded
    assert (img.name, img.sha256, img.size_bytes, img.format) == (
        "ubuntu.qcow2",
        sha(qcow2),
        len(qcow2),
        "qcow2",
    )
    assert img.virtual_size_bytes == 16 << 20
    assert img.path == pool / "images" / "ubuntu.qcow2"
    assert img.path.read_bytes() == qcow2
    sidecar = pool / "images" / "ubuntu.qcow2.sha256"
    assert sidecar.read_bytes() == sha(qcow2).encode()  # no trailing newline
    assert stat.S_IMODE(sidecar.stat().st_mode) == 0o644
    source = json.loads((pool / "images" / "ubuntu.qcow2.source").read_text())
    assert source["url"] == url
    assert source["sha256"] == sha(qcow2)
    assert source["format"] == "qcow2"
    assert source["virtual_size_bytes"] == 16 << 20
    assert source["imported_at"].endswith("Z")
    assert files(pool) == (["ubuntu.qcow2", "ubuntu.qcow2.sha256", "ubuntu.qcow2.source"], [])


def test_unpinned_present_hits_without_rehash(cache, origin, pool, qcow2):
    # Change the bytes behind the cache's back, same size: an unpinned hit must not notice.
    url, _ = cached_and_damaged(cache, origin, pool, qcow2)
    img = cache.ensure_image(pool, url)
    assert not img.downloaded
    assert img.sha256 == sha(qcow2)  # from the sidecar
    assert origin.hits["/ubuntu.qcow2"] == 1


def test_pinned_absent_verifies(cache, origin, pool, qcow2):
    url = origin.serve("/ubuntu.qcow2", qcow2)
    img = cache.ensure_image(pool, url, sha256=sha(qcow2))
    assert img.downloaded
    assert img.sha256 == sha(qcow2)


def test_pinned_absent_mismatch_writes_nothing(cache, origin, pool, qcow2):
    url = origin.serve("/ubuntu.qcow2", qcow2)
    with pytest.raises(ImageError) as err:
        cache.ensure_image(pool, url, sha256=B)
    assert err.value.code == "checksum_mismatch"
    assert not err.value.retryable
    assert str(err.value) == f"checksum_mismatch: url {url} served sha {sha(qcow2)}, expected {B}"
    assert files(pool) == ([], [])


def test_pinned_present_matching_sidecar_rehashes_and_hits(cache, origin, pool, qcow2):
    url = origin.serve("/ubuntu.qcow2", qcow2)
    cache.ensure_image(pool, url)
    img = cache.ensure_image(pool, url, sha256=sha(qcow2))
    assert not img.downloaded
    assert origin.hits["/ubuntu.qcow2"] == 1


def test_pinned_present_matching_sidecar_but_damaged_file_redownloads(cache, origin, pool, qcow2):
    url, path = cached_and_damaged(cache, origin, pool, qcow2)
    img = cache.ensure_image(pool, url, sha256=sha(qcow2))
    assert img.downloaded
    assert path.read_bytes() == qcow2
    assert origin.hits["/ubuntu.qcow2"] == 2


def test_pinned_present_other_sidecar_replaces_atomically(cache, origin, pool, make_qcow2):
    old, new = make_qcow2("16M"), make_qcow2("32M")
    url = origin.serve("/ubuntu.qcow2", old)
    cache.ensure_image(pool, url)
    origin.serve("/ubuntu.qcow2", new)
    img = cache.ensure_image(pool, url, sha256=sha(new))
    assert img.downloaded
    assert (img.sha256, img.virtual_size_bytes) == (sha(new), 32 << 20)
    assert (pool / "images" / "ubuntu.qcow2").read_bytes() == new
    assert (pool / "images" / "ubuntu.qcow2.sha256").read_text() == sha(new)
    assert files(pool)[1] == []


def test_pinned_present_other_sidecar_failed_redownload_keeps_old(cache, origin, pool, qcow2):
    url = origin.serve("/ubuntu.qcow2", qcow2)
    cache.ensure_image(pool, url)
    before = files(pool)
    # The source now serves something else than the pin: verification fails.
    origin.serve("/ubuntu.qcow2", b"not the pinned bytes")
    with pytest.raises(ImageError) as err:
        cache.ensure_image(pool, url, sha256=B)
    assert err.value.code == "checksum_mismatch"
    # ... and the source disappears: the download fails.
    del origin.routes["/ubuntu.qcow2"]
    with pytest.raises(ImageError) as err:
        cache.ensure_image(pool, url, sha256=B)
    assert err.value.code == "download_failed"
    assert files(pool) == before
    assert (pool / "images" / "ubuntu.qcow2").read_bytes() == qcow2
    assert cache.ensure_image(pool, url).sha256 == sha(qcow2)


# --- always ------------------------------------------------------------------------


def test_always_refetches_and_replaces_changed_content(cache, origin, pool, make_qcow2):
    old, new = make_qcow2("16M"), make_qcow2("48M")
    url = origin.serve("/ubuntu.qcow2", old)
    cache.ensure_image(pool, url)
    same = cache.ensure_image(pool, url, pull_policy="always")
    assert same.downloaded
    assert same.sha256 == sha(old)
    origin.serve("/ubuntu.qcow2", new)
    assert cache.ensure_image(pool, url).sha256 == sha(old)  # if-not-present: still a hit
    img = cache.ensure_image(pool, url, pull_policy="always")
    assert img.downloaded
    assert (img.sha256, img.virtual_size_bytes) == (sha(new), 48 << 20)
    assert (pool / "images" / "ubuntu.qcow2").read_bytes() == new
    assert origin.hits["/ubuntu.qcow2"] == 3


def test_always_repairs_a_damaged_file(cache, origin, pool, qcow2):
    url, path = cached_and_damaged(cache, origin, pool, qcow2)
    assert cache.ensure_image(pool, url, pull_policy="always").sha256 == sha(qcow2)
    assert path.read_bytes() == qcow2


def test_always_with_pin_verifies(cache, origin, pool, qcow2):
    url = origin.serve("/ubuntu.qcow2", qcow2)
    cache.ensure_image(pool, url)
    with pytest.raises(ImageError) as err:
        cache.ensure_image(pool, url, sha256=B, pull_policy="always")
    assert err.value.code == "checksum_mismatch"
    assert (pool / "images" / "ubuntu.qcow2").read_bytes() == qcow2


# --- collisions ------------------------------------------------------------------------


def test_other_url_other_content_is_a_collision(cache, origin, pool, make_qcow2):
    mine, theirs = make_qcow2("16M"), make_qcow2("64M")
    url = origin.serve("/a/disk.qcow2", mine)
    other = origin.serve("/b/disk.qcow2", theirs)
    cache.ensure_image(pool, url)
    before = files(pool)
    for policy in ("if-not-present", "always"):
        with pytest.raises(ImageError) as err:
            cache.ensure_image(pool, other, pull_policy=policy)
        assert err.value.code == "image_collision"
        assert not err.value.retryable
        assert url in err.value.message
        assert other in err.value.message
    # Pinned to the other content: refused without downloading.
    hits = origin.hits["/b/disk.qcow2"]
    with pytest.raises(ImageError) as err:
        cache.ensure_image(pool, other, sha256=sha(theirs))
    assert err.value.code == "image_collision"
    assert origin.hits["/b/disk.qcow2"] == hits
    assert files(pool) == before
    assert (pool / "images" / "disk.qcow2").read_bytes() == mine


def test_other_url_same_content_is_fine_and_remembered(cache, origin, pool, qcow2):
    url = origin.serve("/a/disk.qcow2", qcow2)
    mirror = origin.serve("/mirror/disk.qcow2", qcow2)
    cache.ensure_image(pool, url)
    img = cache.ensure_image(pool, mirror)
    assert img.downloaded  # fetched once to compare
    assert img.sha256 == sha(qcow2)
    assert img.url == url
    again = cache.ensure_image(pool, mirror)
    assert not again.downloaded
    assert origin.hits["/mirror/disk.qcow2"] == 1
    source = json.loads((pool / "images" / "disk.qcow2.source").read_text())
    assert source["aliases"] == [mirror]
    # Pinned to the cached sha from yet another URL: re-hash, no download.
    third = origin.url_for("/third/disk.qcow2")
    assert not cache.ensure_image(pool, third, sha256=sha(qcow2)).downloaded
    assert origin.hits["/third/disk.qcow2"] == 0


def test_entry_without_source_is_protected(cache, origin, pool, qcow2):
    """An entry written by an older agent (no .source): its URL is unknown."""
    (pool / "images" / "legacy.img").write_bytes(b"legacy raw bytes")
    (pool / "images" / "legacy.img.sha256").write_text(sha(b"legacy raw bytes"))
    url = origin.serve("/legacy.img", qcow2)
    with pytest.raises(ImageError) as err:
        cache.ensure_image(pool, url)
    assert err.value.code == "image_collision"
    assert "unrecorded URL" in err.value.message
    assert (pool / "images" / "legacy.img").read_bytes() == b"legacy raw bytes"
    # Same bytes from that URL: accepted, and the URL is recorded from now on.
    origin.serve("/legacy.img", b"legacy raw bytes")
    assert cache.ensure_image(pool, url).downloaded
    assert not cache.ensure_image(pool, url).downloaded

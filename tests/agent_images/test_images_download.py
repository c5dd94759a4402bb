"""Downloads against a real HTTP origin: HTTP errors, redirects, timeouts,
truncation, size cap, URL basenames, progress and single flight."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import threading
import time

import pytest

from otherix.agent.images import ImageError
from otherix.agent.images.entries import basename_from_url


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def nothing_written(pool) -> bool:
    return os.listdir(pool / "images") == [] and os.listdir(pool / "scratch") == []


def fails(cache, pool, url, code, **kw) -> ImageError:
    with pytest.raises(ImageError) as err:
        cache.ensure_image(pool, url, **kw)
    assert err.value.code == code, err.value
    return err.value


def test_http_404(cache, origin, pool):
    err = fails(cache, pool, origin.url_for("/missing.qcow2"), "download_failed")
    assert str(err) == "download_failed: source returned HTTP 404"
    assert err.retryable
    assert nothing_written(pool)


def test_http_500(cache, origin, pool):
    url = origin.serve("/x.img", b"oops", status=500)
    assert fails(cache, pool, url, "download_failed").message == "source returned HTTP 500"


def test_redirect_chain_of_five_is_followed(cache, origin, pool, qcow2):
    origin.serve("/final/ubuntu.qcow2", qcow2)
    for i in range(5):
        nxt = f"/r{i + 1}/ubuntu.qcow2" if i < 4 else "/final/ubuntu.qcow2"
        origin.redirect(f"/r{i}/ubuntu.qcow2", nxt, status=(301, 302, 303, 307, 308)[i])
    img = cache.ensure_image(pool, origin.url_for("/r0/ubuntu.qcow2"))
    assert img.name == "ubuntu.qcow2"  # the basename of the requested URL
    assert img.sha256 == sha(qcow2)


def test_six_redirects_stop(cache, origin, pool, qcow2):
    origin.serve("/final/x.img", qcow2)
    for i in range(6):
        nxt = f"/r{i + 1}/x.img" if i < 5 else "/final/x.img"
        origin.redirect(f"/r{i}/x.img", origin.url_for(nxt))
    err = fails(cache, pool, origin.url_for("/r0/x.img"), "download_failed")
    assert err.message == "stopped after 5 redirects"
    assert origin.hits["/final/x.img"] == 0
    assert nothing_written(pool)


def test_redirect_loop_stops(cache, origin, pool):
    origin.redirect("/loop.img", "/loop.img")
    assert fails(cache, pool, origin.url_for("/loop.img"), "download_failed").message == (
        "stopped after 5 redirects"
    )


def test_hanging_server_times_out(make_cache, origin, pool):
    cache = make_cache(read_timeout=0.3)
    url = origin.serve("/hang.img", b"x" * 1000, hang=True)
    t = time.monotonic()
    err = fails(cache, pool, url, "download_failed")
    assert time.monotonic() - t < 5
    assert err.message.startswith("timed out")
    assert err.retryable
    assert nothing_written(pool)


def test_dripping_server_hits_the_total_timeout(make_cache, origin, pool):
    """One byte every 20 ms never trips the read timeout; the total limit still holds."""
    cache = make_cache(read_timeout=5.0, total_timeout=0.5)
    url = origin.serve("/drip.img", b"d" * 10_000, drip=0.02)
    t = time.monotonic()
    err = fails(cache, pool, url, "download_failed")
    assert time.monotonic() - t < 3
    assert err.message == "timed out: download not finished after 0.5s"
    assert nothing_written(pool)


def test_dripping_body_without_length_is_not_mistaken_for_complete(make_cache, origin, pool):
    cache = make_cache(read_timeout=5.0, total_timeout=0.5)
    url = origin.serve("/drip.img", b"d" * 10_000, drip=0.02, content_length=False)
    assert fails(cache, pool, url, "download_failed").message.startswith("timed out")
    assert nothing_written(pool)


def test_truncated_body(cache, origin, pool):
    url = origin.serve("/short.img", b"y" * 300_000, truncate_to=100_000)
    err = fails(cache, pool, url, "download_failed")
    assert err.message.startswith("truncated")
    assert "100000 of 300000" in err.message
    assert nothing_written(pool)


def test_size_cap_refuses_early_on_content_length(make_cache, origin, pool):
    cache = make_cache(max_image_bytes=1 << 20)
    url = origin.serve("/big.img", b"z" * (2 << 20))
    err = fails(cache, pool, url, "image_unavailable")
    assert str(err) == f"image_unavailable: image exceeds max size {1 << 20} bytes"
    assert nothing_written(pool)


def test_size_cap_enforced_in_stream(make_cache, origin, pool):
    cache = make_cache(max_image_bytes=1 << 20)
    url = origin.serve("/big.img", b"z" * (2 << 20), content_length=False)
    err = fails(cache, pool, url, "image_unavailable")
    assert err.message == f"image exceeds max size {1 << 20} bytes"
    assert nothing_written(pool)


def test_body_without_content_length(cache, origin, pool):
    data = os.urandom(300_000)
    url = origin.serve("/stream.img", data, content_length=False)
    img = cache.ensure_image(pool, url)
    assert (img.sha256, img.size_bytes, img.format) == (sha(data), len(data), "raw")
    assert img.virtual_size_bytes == 300_032  # qemu-img: a raw file's size rounded up to 512


def test_empty_body_is_refused(cache, origin, pool):
    url = origin.serve("/empty.img", b"")
    assert fails(cache, pool, url, "download_failed").message.endswith("empty body")
    assert nothing_written(pool)


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("http://h/images/ubuntu-24.04.img?token=abc#frag", "ubuntu-24.04.img"),
        ("http://h/a%20b.qcow2", "a b.qcow2"),
        ("https://h:8443/x/y/z.raw", "z.raw"),
    ],
)
def test_basename(url, name):
    assert basename_from_url(url) == name


def test_longest_basename_fits_its_scratch_name(cache, origin, pool):
    name = "n" * 222 + ".img"  # 226 bytes: the sidecar's temp name is 255
    img = cache.ensure_image(pool, origin.serve(f"/{name}", b"long"))
    assert img.name == name
    assert img.path.read_bytes() == b"long"


@pytest.mark.parametrize(
    "url",
    [
        "http://h/",
        "http://h",
        "http://h/dir/",
        "http://h/.",
        "http://h/..",
        "http://h/%2e%2e",
        "http://h/a%2Fb",
        "http://h/x.sha256",
        "http://h/x.source",
        "http://h/x.tmp",
        "http://h/.hidden",
        "http://h/a%00b",
        "http://h/a%0Ab",
        "http://h/%ff",
        "http://h/" + "n" * 223 + ".img",
    ],
)
def test_url_without_usable_basename(cache, pool, url):
    err = fails(cache, pool, url, "image_unavailable")
    assert "URL has no usable basename" in err.message
    assert not err.retryable


@pytest.mark.parametrize("url", ["ftp://h/x.img", "file:///etc/passwd", "x.img", "http:///x.img"])
def test_only_http_and_https(cache, pool, url):
    fails(cache, pool, url, "image_unavailable")


def test_bad_arguments_are_caller_bugs(cache, pool):
    with pytest.raises(ValueError, match="pull_policy"):
        cache.ensure_image(pool, "http://h/x.img", pull_policy="never")
    with pytest.raises(ValueError, match="sha256"):
        cache.ensure_image(pool, "http://h/x.img", sha256="ABC")


def test_pool_not_materialised(cache, tmp_path):
    err = fails(cache, tmp_path / "nope", "http://127.0.0.1:1/x.img", "image_unavailable")
    assert "not materialised" in err.message


def test_progress_is_throttled_and_ends_at_total(make_cache, origin, pool):
    data = os.urandom(2 << 20)
    url = origin.serve("/p.img", data, chunk_delay=0.005)
    calls: list[tuple[int, int | None]] = []
    make_cache(progress_interval=0.05).ensure_image(
        pool, url, progress=lambda d, t: calls.append((d, t))
    )
    assert calls[0] == (0, len(data))
    assert calls[-1] == (len(data), len(data))
    assert 3 <= len(calls) < 32 + 2  # 32 chunks at 5 ms: about 4 reports, never one per chunk
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_progress_without_content_length_ends_at_done(cache, origin, pool):
    data = os.urandom(200_000)
    url = origin.serve("/p.img", data, content_length=False)
    calls: list[tuple[int, int | None]] = []
    cache.ensure_image(pool, url, progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, None)
    assert calls[-1] == (len(data), len(data))


def test_twenty_concurrent_ensures_download_once(cache, origin, pool):
    data = os.urandom(4 << 20)
    url = origin.serve("/popular.img", data, chunk_delay=0.002)
    results, errors = [], []
    start = threading.Barrier(20)

    def worker():
        start.wait()
        try:
            results.append(cache.ensure_image(pool, url))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert origin.hits["/popular.img"] == 1
    assert sum(r.downloaded for r in results) == 1
    assert {r.sha256 for r in results} == {sha(data)}
    assert os.listdir(pool / "scratch") == []


def test_different_basenames_download_in_parallel(cache, origin, pool):
    """Single flight is per basename: a slow download does not block another image."""
    slow = origin.serve("/slow.img", b"s" * (1 << 20), chunk_delay=0.05)  # ~0.8 s
    fast = origin.serve("/fast.img", b"f" * 1000)
    t = threading.Thread(target=cache.ensure_image, args=(pool, slow))
    t.start()
    time.sleep(0.1)
    began = time.monotonic()
    cache.ensure_image(pool, fast)
    assert time.monotonic() - began < 0.5
    t.join(10)


# --- formats --------------------------------------------------------------------------


def qcow2_header(version: int = 3, backing_offset: int = 0, incompatible: int = 0) -> bytes:
    head = struct.pack(">4sIQIIQ", b"QFI\xfb", version, backing_offset, 0, 16, 1 << 24)
    head = head.ljust(72, b"\0") + struct.pack(">QQQII", incompatible, 0, 0, 4, 104)
    return head.ljust(4096, b"\0")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (qcow2_header(version=1), "version 1"),
        (qcow2_header(version=4), "version 4"),
        (qcow2_header(backing_offset=512), "backing file"),
        (qcow2_header(incompatible=1 << 2), "external data file"),
        (b"QFI\xfb\x00\x00", "too short"),
    ],
)
def test_bad_qcow2_is_refused_and_nothing_written(cache, origin, pool, body, why):
    err = fails(cache, pool, origin.serve("/bad.qcow2", body), "unsupported_format")
    assert why in err.message
    assert not err.retryable
    assert nothing_written(pool)


def test_real_qcow2_with_backing_file_is_refused(cache, origin, pool, tmp_path):
    base = tmp_path / "base.qcow2"
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(overlay)],
        check=True,
    )
    err = fails(cache, pool, origin.serve("/o.qcow2", overlay.read_bytes()), "unsupported_format")
    assert "backing file" in err.message
    assert nothing_written(pool)


def test_raw_bytes_that_are_not_qcow2_are_raw(cache, origin, pool):
    img = cache.ensure_image(pool, origin.serve("/disk.iso", b"CD001" * 1000))
    assert img.format == "raw"

"""Tests for otherix.domain.vms: image URL and digest syntax, the cache key, missing disks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from otherix.domain.vms import (
    PHASES,
    disk_missing,
    image_basename,
    validate_image_url,
    validate_sha256,
)

ABSOLUTE = "image_url must be an absolute http:// or https:// URL"
SPACE = "image_url must not contain whitespace or control characters"
NO_FILE = "image_url must end in a file name (the image cache is keyed by it)"
CREDENTIALS = "image_url must not carry credentials (user:password@); serve the image without them"
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_phases_in_lifecycle_order():
    assert PHASES == ("pending", "creating", "stopped", "moving", "error", "deleting")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://img.example/debian.qcow2", None),
        ("http://img.example:8080/a/b/debian.raw?sig=1", None),
        ("https://[::1]/x.img", None),
        ("", "image_url is required"),
        ("https://h/" + "a" * 2038, None),  # exactly 2048 characters
        ("https://h/" + "a" * 2039, "image_url is too long (max 2048 characters)"),
        ("https://img.example/a b.qcow2", SPACE),
        ("https://img.example/a.qcow2\n", SPACE),
        ("https://img.example/\x01.qcow2", SPACE),
        ("https://img.example/a.qcow2\u00a0", SPACE),  # Unicode whitespace too
        ("https://img.example:99999/a.qcow2", "image_url is not a valid URL"),
        ("https://img.example:port/a.qcow2", "image_url is not a valid URL"),
        ("https://[::1/a.qcow2", "image_url is not a valid URL"),
        ("ftp://img.example/a.qcow2", ABSOLUTE),
        ("file:///srv/a.qcow2", ABSOLUTE),
        ("/srv/a.qcow2", ABSOLUTE),
        ("https:///a.qcow2", ABSOLUTE),
        ("HTTPS://img.example/a.qcow2", None),  # urlsplit lower-cases the scheme
        ("https://user:pw@img.example/a.qcow2", CREDENTIALS),
        ("https://user@img.example/a.qcow2", CREDENTIALS),
        ("https://:pw@img.example/a.qcow2", CREDENTIALS),
        ("https://img.example/", NO_FILE),
        ("https://img.example", NO_FILE),
        ("https://img.example/a/..", NO_FILE),
        ("https://img.example/a/.", NO_FILE),
    ],
)
def test_validate_image_url(url, message):
    assert validate_image_url(url) == message


@pytest.mark.parametrize(
    ("url", "basename"),
    [
        ("https://h/a/b/debian.qcow2", "debian.qcow2"),
        ("https://h/debian.qcow2?sig=1&x=2", "debian.qcow2"),
        ("https://h/debian.qcow2#frag", "debian.qcow2"),
        ("https://h/a/", None),
        ("https://h", None),
        ("https://h/..", None),
        ("https://h/.", None),
        ("https://h/a%2Fb", "a%2Fb"),  # not decoded: the key is the URL's own text
    ],
)
def test_image_basename(url, basename):
    assert image_basename(url) == basename


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("0" * 64, True),
        ("abcdef0123456789" * 4, True),
        ("ABCDEF0123456789" * 4, True),
        ("0" * 63, False),
        ("0" * 65, False),
        ("", False),
        ("g" + "0" * 63, False),
        ("0" * 64 + "\n", False),
        ("٠" * 64, False),  # Arabic-Indic digits are not hex
    ],
)
def test_validate_sha256(value, ok):
    assert (validate_sha256(value) is None) is ok
    if not ok:
        assert validate_sha256(value) == "image_sha256 must be 64 hex digits"


@pytest.mark.parametrize(
    ("file_path", "missing_since", "pool_status", "reason"),
    [
        (None, None, "ready", None),  # not made yet: never missing
        (None, WHEN, "failed", None),
        ("/p/vm.qcow2", None, "ready", None),
        ("/p/vm.qcow2", None, None, None),
        ("/p/vm.qcow2", None, "failed", "pool_failed"),
        ("/p/vm.qcow2", WHEN, "failed", "pool_failed"),  # the pool's failure wins
        ("/p/vm.qcow2", WHEN, "ready", "file_missing"),
        ("/p/vm.qcow2", WHEN, None, "file_missing"),
    ],
)
def test_disk_missing(file_path, missing_since, pool_status, reason):
    assert disk_missing(file_path, missing_since, pool_status) == reason

"""Tests for otherix.domain.paths: contract §3.2-§3.3 examples plus properties."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otherix.domain.paths import (
    clean_path,
    default_pool_path,
    has_control_character,
    path_allowed,
    paths_overlap,
    pool_path_allowed,
    validate_allowed_prefixes,
    validate_pool_path,
)

PREFIX = "/var/lib/otherix/pools/"
CONTROL = "path must not contain control characters (newline, tab, escape ...)"
PROPS = settings(max_examples=200, deadline=None)

# --- pool path syntax (§3.2) ---


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/var/lib/",
        "/" + "a" * 1023,
        "/var/lib/otherix/pools/a..b",
        "/var/lib/otherix/pools/data/",  # trailing slash kept
        "//var//lib/otherix/pools",  # doubled slashes kept
        "/var/lib/otherix/pools/./data",
        "/var/lib/otherix/pools/...",
    ],
)
def test_pool_path_accepted(path):
    assert validate_pool_path(path) is None


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "path is required"),
        ("/" + "a" * 1024, "path is too long (max 1024 bytes)"),
        ("/" + "é" * 512, "path is too long (max 1024 bytes)"),  # 1025 bytes, 513 runes
        ("var/lib", 'path must be absolute (start with "/")'),
        ("./var/lib", 'path must be absolute (start with "/")'),
        ("~/pools", 'path must be absolute (start with "/")'),
        ("/var/lib/\x00pools", "path must not contain the NUL byte"),
        ("/var/lib/../foo", "path must not contain a '..' segment"),
        ("/var/lib/otherix/pools/..", "path must not contain a '..' segment"),
        ("/var/lib/otherix/pools/../../../etc", "path must not contain a '..' segment"),
        ("/..", "path must not contain a '..' segment"),
        ("/var/lib/../", "path must not contain a '..' segment"),
        ("/var/lib/otherix/pools/a\nb", CONTROL),
        ("/var/lib/otherix/pools/a\tb", CONTROL),
        ("/var/lib/otherix/pools/\x1b[31mred", CONTROL),
        ("/var/lib/otherix/pools/del\x7f", CONTROL),
    ],
)
def test_pool_path_rejected(path, message):
    assert validate_pool_path(path) == message


def test_pool_path_byte_limit_boundary_with_multibyte():
    assert validate_pool_path("/" + "é" * 511 + "a") is None  # 1 + 1022 + 1 = 1024 bytes


def test_pool_path_checks_run_in_contract_order():
    # Too long wins over relative; relative wins over NUL; NUL wins over "..".
    assert validate_pool_path("a" * 1025) == "path is too long (max 1024 bytes)"
    assert validate_pool_path("a\x00/..") == 'path must be absolute (start with "/")'
    assert validate_pool_path("/\x00/..") == "path must not contain the NUL byte"


# --- clean_path ---


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # Cases from Go's path/filepath cleantests (POSIX).
        ("", "."),
        ("abc", "abc"),
        ("abc/def", "abc/def"),
        ("a/b/c", "a/b/c"),
        (".", "."),
        ("..", ".."),
        ("../..", "../.."),
        ("../../abc", "../../abc"),
        ("/abc", "/abc"),
        ("/", "/"),
        ("abc/", "abc"),
        ("abc/def/", "abc/def"),
        ("/abc/", "/abc"),
        ("abc//def//ghi", "abc/def/ghi"),
        ("//abc", "/abc"),
        ("///abc", "/abc"),
        ("//abc//", "/abc"),
        ("abc//", "abc"),
        ("abc/./def", "abc/def"),
        ("/./abc/def", "/abc/def"),
        ("abc/.", "abc"),
        ("abc/def/ghi/../jkl", "abc/def/jkl"),
        ("abc/def/../ghi/../jkl", "abc/jkl"),
        ("abc/def/..", "abc"),
        ("abc/def/../..", "."),
        ("/abc/def/../..", "/"),
        ("abc/def/../../..", ".."),
        ("/abc/def/../../..", "/"),
        ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
        ("/../abc", "/abc"),
        ("abc/./../def", "def"),
        ("abc//./../def", "def"),
        ("abc/../../././../def", "../../def"),
        ("//", "/"),
        ("/var/lib/otherix/pools/data/..", "/var/lib/otherix/pools"),
    ],
)
def test_clean_path_matches_go(path, expected):
    assert clean_path(path) == expected


_SEGMENTS = st.sampled_from(["", ".", "..", "a", "b", "pools", "...", "a..b"])


@st.composite
def _raw_paths(draw):
    segments = draw(st.lists(_SEGMENTS | st.text("ab.", min_size=1, max_size=3), max_size=8))
    lead = draw(st.sampled_from(["", "/", "//", "///"]))
    return lead + "/".join(segments)


@PROPS
@given(_raw_paths())
def test_clean_path_idempotent_and_matches_normpath(path):
    cleaned = clean_path(path)
    assert clean_path(cleaned) == cleaned
    expected = posixpath.normpath(path)
    if expected.startswith("//") and not expected.startswith("///"):
        # POSIX keeps exactly two leading slashes; Go's Clean does not.
        expected = expected[1:]
    assert cleaned == expected
    if path.startswith("/"):
        assert cleaned.startswith("/")
        assert not cleaned.startswith("//")
        assert cleaned == "/" or not cleaned.endswith("/")


# --- allowlist (§3.2) ---


@pytest.mark.security
@pytest.mark.parametrize(
    "path",
    [
        "/var/lib/otherix/pools/data",
        "/var/lib/otherix/pools",
        "/var/lib/otherix/pools/",
        "/var/lib/otherix/pools/data/..",
        "/var/lib/otherix/pools//data/",
        "//var/lib/otherix/pools/data",
    ],
)
def test_allowlist_accepted(path):
    assert path_allowed(path, [PREFIX])


@pytest.mark.security
@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "/var/lib/otherix/pools-evil/data",
        "/var/lib/otherix/pools-evil",
        "/var/lib/otherix/pools/../../../etc",
        "/var/lib/otherix/pools/..",
        "/var/lib/otherix",
        "/",
        "var/lib/otherix/pools/data",  # relative paths never match
        "",
    ],
)
def test_allowlist_rejected(path):
    assert not path_allowed(path, [PREFIX])


@pytest.mark.security
def test_allowlist_any_prefix_matches():
    prefixes = ["/srv/pools/", PREFIX]
    assert path_allowed("/srv/pools/x", prefixes)
    assert path_allowed("/var/lib/otherix/pools/y", prefixes)
    assert not path_allowed("/srv/poolsx", prefixes)
    assert not path_allowed("/srv/pools/x", [])


def test_allowlist_root_prefix_matches_every_absolute_path():
    assert path_allowed("/", ["/"])
    assert path_allowed("/etc/passwd", ["/"])
    assert path_allowed("//x/../y", ["/"])
    assert not path_allowed("relative", ["/"])


@pytest.mark.security
def test_allowlist_prefix_without_trailing_slash_is_still_boundary_safe():
    assert path_allowed("/srv/pools/a", ["/srv/pools"])
    assert not path_allowed("/srv/pools-evil", ["/srv/pools"])


@pytest.mark.security
@PROPS
@given(st.lists(_SEGMENTS, max_size=10))
def test_allowlisted_paths_never_escape_the_prefix(segments):
    path = PREFIX + "/".join(segments)
    cleaned = clean_path(path)
    if path_allowed(path, [PREFIX]):
        assert cleaned == PREFIX.rstrip("/") or cleaned.startswith(PREFIX)
        assert ".." not in cleaned.split("/")
    else:
        assert not (cleaned + "/").startswith(PREFIX)


# --- allowlist config ---


@pytest.mark.parametrize("prefixes", [[PREFIX], ["/"], ["/srv/pools/", "/mnt/"]])
def test_allowed_prefixes_config_accepted(prefixes):
    assert validate_allowed_prefixes(prefixes) is None


@pytest.mark.parametrize(
    "prefixes",
    [[], ["/var/lib/otherix/pools"], ["var/lib/otherix/pools/"], [PREFIX, "relative/"], [""]],
)
def test_allowed_prefixes_config_rejected(prefixes):
    assert validate_allowed_prefixes(prefixes) is not None


# --- default pool guard (§3.3) ---


def test_default_pool_path_for_default_name():
    assert default_pool_path(PREFIX, "default") == "/var/lib/otherix/pools/default"
    assert default_pool_path("/opt/otherix/pools/", "default") == "/opt/otherix/pools/default"


@pytest.mark.security
@pytest.mark.parametrize("name", ["a/b", "..", ".", "../etc", "", "/abs"])
def test_default_pool_path_rejects_escaping_names(name):
    assert default_pool_path(PREFIX, name) is None


@pytest.mark.security
def test_default_pool_path_prefix_without_slash_escapes():
    # "/opt/pools" + "default" = "/opt/poolsdefault", outside "/opt/pools".
    assert default_pool_path("/opt/pools", "default") is None


def test_default_pool_path_under_root_prefix():
    assert default_pool_path("/", "default") == "/default"


# --- paths_overlap ---


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("/srv/p/x", "/srv/p/x", True),
        ("//srv/p/./x", "/srv/p/x", True),
        ("/srv/p/x/", "/srv/p/x", True),
        ("/srv/p/x/vms/inner", "/srv/p/x", True),
        ("/srv/p/x", "/srv/p/x/scratch/inner", True),
        ("/srv/p", "/srv/p2", False),
        ("/srv/p2/x", "/srv/p/x", False),
        ("/srv/p/a", "/srv/p/b", False),
        ("/", "/anything", True),
        ("/srv/p/x/../y", "/srv/p/y", True),
    ],
)
def test_paths_overlap(a, b, expected):
    assert paths_overlap(a, b) is expected
    assert paths_overlap(b, a) is expected


# --- control characters ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/srv/p/a", False),
        ("", False),
        ("/srv/p/é", False),
        ("/srv/p/\u0085", False),  # C1 controls are not refused (only C0 and DEL)
        ("/srv/p/ a", False),
        ("/srv/p/\x00", True),
        ("/srv/p/\n", True),
        ("/srv/p/\t", True),
        ("/srv/p/\x1b[31m", True),
        ("/srv/p/\x1f", True),
        ("/srv/p/\x7f", True),
    ],
)
def test_has_control_character(text, expected):
    assert has_control_character(text) is expected


# --- the create rule: strictly below a prefix (issue 12) ---


@pytest.mark.security
@pytest.mark.parametrize(
    ("path", "prefixes", "expected"),
    [
        ("/srv/pools/a", ["/srv/pools/"], True),
        ("/srv/pools/a/b", ["/srv/pools/"], True),
        ("/srv/pools/", ["/srv/pools/"], False),  # the prefix itself
        ("/srv/pools", ["/srv/pools/"], False),
        ("/srv/pools//", ["/srv/pools/"], False),
        ("/srv/pools/./", ["/srv/pools/"], False),
        ("/srv/pools/a/..", ["/srv/pools/"], False),
        ("/srv/pools-evil/a", ["/srv/pools/"], False),
        ("/srv/pools", ["/srv/", "/srv/pools/"], False),  # below one prefix, another itself
        ("/srv/pools/a", ["/srv/", "/srv/pools/"], True),
        ("/srv/other", ["/srv/", "/srv/pools/"], True),
        ("/a", ["/"], True),
        ("/", ["/"], False),
        ("relative/a", ["/srv/pools/"], False),
        ("/srv/pools/a", ["relative/"], False),
        ("/srv/pools/a", [], False),
    ],
)
def test_pool_path_allowed_table(path, prefixes, expected):
    assert pool_path_allowed(path, prefixes) is expected

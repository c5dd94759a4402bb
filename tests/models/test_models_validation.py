"""Tests for otherix.models.validation: contract §3.1-§3.3 examples plus properties."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otherix.models.validation import (
    clean_path,
    default_pool_path,
    looks_like_uuid,
    path_allowed,
    paths_overlap,
    validate_allowed_prefixes,
    validate_node_name,
    validate_pool_name,
    validate_pool_path,
    validate_pool_type,
)

PREFIX = "/var/lib/otherix/pools/"
CONTROL = "path must not contain control characters (newline, tab, escape ...)"
PROPS = settings(max_examples=200, deadline=None)
NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9._-]*"

# --- pool names (§3.1) ---


@pytest.mark.parametrize(
    "name",
    [
        "default",
        "ssd-fast",
        "pool-1",
        "pool_a",
        "my_pool",
        "pool.2",
        "Pool1",
        "a" * 255,
        "0",
        "a..",
    ],
)
def test_pool_name_accepted(name):
    assert validate_pool_name(name) is None


@pytest.mark.parametrize(
    "name",
    [
        " pool",  # leading space
        "pool ",  # trailing space
        "my pool",  # inner space
        ".hidden",  # leading dot
        "a/b",
        "пул",  # Cyrillic
        "poolé",  # non-ASCII letter after a valid start
        "pool١",  # Arabic-Indic digit: not ASCII
        ".",
        "..",
        "-pool",
        "_pool",
        "pool\n",  # a trailing newline must not slip past "$"
        "pool\x00",
    ],
)
def test_pool_name_rejected_by_pattern(name):
    message = validate_pool_name(name)
    assert message is not None
    assert message.startswith("invalid pool name ")
    assert message.endswith(f"(must match {NAME_PATTERN})")


def test_pool_name_message_quotes_the_name():
    assert validate_pool_name("a/b") == f'invalid pool name "a/b" (must match {NAME_PATTERN})'
    assert validate_pool_name("pool\n") == (
        f'invalid pool name "pool\\n" (must match {NAME_PATTERN})'
    )
    assert validate_pool_name('x"y') == f'invalid pool name "x\\"y" (must match {NAME_PATTERN})'


def test_pool_name_required():
    assert validate_pool_name("") == "name is required"


def test_pool_name_too_long():
    assert validate_pool_name("a" * 256) == "name is too long (max 255 runes)"


def test_pool_name_length_counts_runes_not_bytes():
    # 255 two-byte runes are within the length limit (rejected only by the pattern).
    message = validate_pool_name("é" * 255)
    assert message is not None
    assert message.startswith("invalid pool name")
    assert validate_pool_name("é" * 256) == "name is too long (max 255 runes)"


# --- pool type ---


def test_pool_type_local_dir_accepted():
    assert validate_pool_type("local_dir") is None


@pytest.mark.parametrize("value", ["Local_Dir", "LOCAL_DIR", "", "lvm", "local_dir "])
def test_pool_type_rejected(value):
    assert validate_pool_type(value) == (
        f'invalid storage pool type "{value}" (must be one of: local_dir)'
    )


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


# --- node names ---


@pytest.mark.parametrize(
    "name", ["node-1", "a", "Node.example.com", "n_1", "0", "a" * 253, "a-b.c_d9"]
)
def test_node_name_accepted(name):
    assert validate_node_name(name) is None


def test_node_name_required_and_too_long():
    assert validate_node_name("") == "node name is required"
    assert validate_node_name("a" * 254) == "node name is too long (max 253 characters)"


@pytest.mark.parametrize(
    "name", ["-node", "node-", "node.", ".node", "no de", "нода", "n/1", "n\n"]
)
def test_node_name_rejected(name):
    message = validate_node_name(name)
    assert message is not None
    assert message.startswith("invalid node name ")
    assert message.endswith(
        "(letters, digits, '.', '_' and '-', starting and ending with a letter or digit)"
    )


def test_node_name_message_exact():
    assert validate_node_name("-x") == (
        "invalid node name \"-x\" (letters, digits, '.', '_' and '-', "
        "starting and ending with a letter or digit)"
    )


# --- uuid ---


@pytest.mark.parametrize(
    "value",
    ["0b6f3a52-7c1e-4d2a-9f3b-1a2b3c4d5e6f", "0B6F3A52-7C1E-4D2A-9F3B-1A2B3C4D5E6F"],
)
def test_looks_like_uuid_accepted(value):
    assert looks_like_uuid(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "default",
        "0b6f3a527c1e4d2a9f3b1a2b3c4d5e6f",
        "{0b6f3a52-7c1e-4d2a-9f3b-1a2b3c4d5e6f}",
        "0b6f3a52-7c1e-4d2a-9f3b-1a2b3c4d5e6g",
        "0b6f3a52-7c1e-4d2a-9f3b-1a2b3c4d5e6f\n",
        " 0b6f3a52-7c1e-4d2a-9f3b-1a2b3c4d5e6f",
    ],
)
def test_looks_like_uuid_rejected(value):
    assert not looks_like_uuid(value)


@PROPS
@given(st.uuids())
def test_looks_like_uuid_for_random_uuids(value):
    assert looks_like_uuid(str(value))
    assert looks_like_uuid(str(value).upper())


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

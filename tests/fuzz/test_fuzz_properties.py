"""Hypothesis properties of the pure input rules: names, pool paths, the allowlist,
the default-pool guard and pagination cursors (``otherix.models``).

Each property compares the code with a small reference written differently (a
component list instead of string prefixes, ``uuid.UUID`` instead of a regex,
``strptime`` instead of a pattern, ``ast.literal_eval`` to read a quoted name
back) or states an invariant. ``tests/models`` already has the example
tables and the plain round trips (``clean_path`` against ``posixpath.normpath``,
cursor encode/decode, random text raising only ``InvalidCursor``); these do not
repeat them.
"""

from __future__ import annotations

import ast
import base64
import string
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fuzzhelpers import WHEN, mutated_cursors, run_property
from hypothesis import strategies as st

from otherix.domain.names import looks_like_uuid, validate_node_name, validate_pool_name
from otherix.domain.paths import clean_path, default_pool_path, path_allowed, validate_pool_path
from otherix.domain.vms import image_basename
from otherix.models.pagination import InvalidCursor, decode_cursor, encode_cursor

ALNUM = string.ascii_letters + string.digits
POOL_PATTERN = "(must match [A-Za-z0-9][A-Za-z0-9._-]*)"
NODE_RULE = "(letters, digits, '.', '_' and '-', starting and ending with a letter or digit)"
#: characters that matter to the name rules, plus look-alikes outside ASCII
TRICKY = [*"aZ09._-/ \\\"'\n\t\x00\x7f", "é", "١", "İ", "ı", "\u00a0", "\u2028", "😀"]
names = st.text(st.sampled_from(TRICKY) | st.characters(), max_size=24) | st.builds(
    lambda c, n: c * n, st.sampled_from(["a", "é", "-", "0"]), st.integers(250, 258)
)


def unquote(quoted: str) -> str:
    """Read a Go ``%q`` string back (its escapes are a subset of Python's)."""
    assert quoted.startswith('"')
    assert quoted.endswith('"')
    value = ast.literal_eval(quoted)
    assert isinstance(value, str)
    return value


def assert_quotes(message: str, prefix: str, rule: str, name: str) -> None:
    """``message`` is ``prefix``, then ``name`` quoted (``%q``), then a space and ``rule``."""
    assert message.startswith(prefix)
    assert message.endswith(" " + rule)
    assert unquote(message[len(prefix) : -len(rule) - 1]) == name


# --- names ----------------------------------------------------------------------------


def ref_pool_name(name: str) -> bool:
    return 1 <= len(name) <= 255 and name[0] in ALNUM and all(c in ALNUM + "._-" for c in name[1:])


def test_pool_names_match_the_reference_and_messages_quote_the_name(reliability):
    def body(name: str) -> str:
        message = validate_pool_name(name)
        assert (message is None) == ref_pool_name(name), (name, message)
        if message is None:
            return "accepted"
        if name == "":
            assert message == "name is required"
        elif len(name) > 255:
            assert message == "name is too long (max 255 runes)"
        else:
            assert_quotes(message, "invalid pool name ", POOL_PATTERN, name)
        return "refused"

    seen = run_property(reliability, "pool name = reference rule", names, body)
    assert seen["accepted"] >= 20
    assert seen["refused"] >= 20


def ref_node_name(name: str) -> bool:
    allowed = set(ALNUM + "._-")
    return (
        1 <= len(name) <= 253
        and name[0] in ALNUM
        and name[-1] in ALNUM
        and all(c in allowed for c in name)
    )


def test_node_names_match_the_reference_and_messages_quote_the_name(reliability):
    def body(name: str) -> str:
        message = validate_node_name(name)
        assert (message is None) == ref_node_name(name), (name, message)
        if message is None:
            return "accepted"
        if name and len(name) <= 253:
            assert_quotes(message, "invalid node name ", NODE_RULE, name)
        return "refused"

    seen = run_property(reliability, "node name = reference rule", names, body)
    assert seen["accepted"] >= 20
    assert seen["refused"] >= 20


@st.composite
def uuid_like(draw: st.DrawFn) -> str:
    text = str(draw(st.uuids()))
    text = "".join(c.upper() if draw(st.booleans()) else c for c in text)
    edit = draw(st.sampled_from(["none", "replace", "insert", "delete", "wrap"]))
    i = draw(st.integers(0, len(text) - 1))
    junk = draw(st.sampled_from(["g", "-", "{", " ", "\n", "١", "Ａ", "0", "f"]))
    if edit == "replace":
        text = text[:i] + junk + text[i + 1 :]
    elif edit == "insert":
        text = text[:i] + junk + text[i:]
    elif edit == "delete":
        text = text[:i] + text[i + 1 :]
    elif edit == "wrap":
        text = draw(st.sampled_from(["{%s}", "urn:uuid:%s", "%s\n", " %s"])) % text
    return text


def ref_uuid(text: str) -> bool:
    if len(text) != 36:
        return False
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        return False
    return text.lower() == str(parsed)


def test_looks_like_uuid_matches_the_uuid_module(reliability):
    def body(text: str) -> str:
        assert looks_like_uuid(text) == ref_uuid(text), text
        return "accepted" if ref_uuid(text) else "refused"

    seen = run_property(
        reliability, "looks_like_uuid = uuid.UUID canonical form", uuid_like(), body
    )
    assert seen["accepted"] >= 20
    assert seen["refused"] >= 20


# --- pool paths and the allowlist -------------------------------------------------------------

SEGMENTS = ["a", "b", "ab", "bc", "a.b", "..", ".", "", "...", "b c", "é"]


@st.composite
def raw_paths(draw: st.DrawFn, absolute: bool | None = None) -> str:
    parts = draw(st.lists(st.sampled_from(SEGMENTS), max_size=7))
    leads = ["/", "//"] if absolute else ["", "/", "//"] if absolute is None else [""]
    lead = draw(st.sampled_from(leads))
    trail = draw(st.sampled_from(["", "/", "//"]))
    return lead + "/".join(parts) + trail


def components(path: str) -> list[str]:
    """The reference normalisation: a stack of names, ``..`` pops (never above the root)."""
    stack: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if stack:
                stack.pop()
        elif part not in ("", "."):
            stack.append(part)
    return stack


def ref_allowed(path: str, prefix: str) -> bool:
    if not (path.startswith("/") and prefix.startswith("/")):
        return False
    want = components(prefix)
    return components(path)[: len(want)] == want


@pytest.mark.security
def test_allowlist_matches_a_component_list_reference(reliability):
    def body(example: tuple[str, list[str]]) -> str:
        path, prefixes = example
        got = path_allowed(path, prefixes)
        assert got == any(ref_allowed(path, p) for p in prefixes), (path, prefixes)
        if got:
            cleaned = clean_path(path)
            assert ".." not in cleaned.split("/")
            assert path.startswith("/")
        return "accepted" if got else "refused"

    strategy = st.tuples(raw_paths(), st.lists(raw_paths(), min_size=1, max_size=3))
    seen = run_property(
        reliability, "allowlist = component-list reference", strategy, body, max_examples=500
    )
    assert seen["accepted"] >= 30
    assert seen["refused"] >= 30


@pytest.mark.security
def test_a_sibling_sharing_the_prefix_text_is_never_allowed(reliability):
    """``/a/b/`` admits ``/a/b`` and below, never ``/a/bc`` or ``/a/b.x`` (one segment on)."""

    def body(example: tuple[str, str, str]) -> str:
        prefix, suffix, trail = example
        base = clean_path(prefix)
        assert not path_allowed(base + suffix + trail, [base + "/"]), (base, suffix)
        assert not path_allowed(base + suffix + trail, [base])
        assert path_allowed(base + trail, [base + "/"])
        return "refused"

    prefix = raw_paths(absolute=True).filter(lambda p: clean_path(p) != "/")
    suffix = st.text(st.sampled_from(list("abc.-_ é")), min_size=1, max_size=6)
    run_property(
        reliability,
        "allowlist boundary: /a/b never admits /a/bc",
        st.tuples(prefix, suffix, st.sampled_from(["", "/", "/x", "/x/.."])),
        body,
    )


@pytest.mark.security
def test_trailing_slashes_and_spelling_do_not_change_the_answer(reliability):
    def body(example: tuple[str, str]) -> str:
        path, prefix = example
        answer = path_allowed(path, [prefix])
        assert path_allowed(path + "/", [prefix]) == answer
        assert path_allowed(path.replace("/", "//"), [prefix]) == answer
        assert path_allowed(clean_path(path), [prefix]) == answer
        assert path_allowed(path, [prefix.rstrip("/") + "/"]) == answer
        assert path_allowed(path, [clean_path(prefix)]) == answer
        return "accepted" if answer else "refused"

    prefix = raw_paths(absolute=True).filter(lambda p: clean_path(p) != "/")
    seen = run_property(
        reliability,
        "allowlist ignores trailing slashes and spelling",
        st.tuples(raw_paths(absolute=True), prefix),
        body,
    )
    assert seen["accepted"] >= 10


@pytest.mark.security
def test_a_valid_pool_path_cleans_only_by_dropping_empty_and_dot_segments(reliability):
    """What is stored (as typed) and what the allowlist judges (cleaned) name the same place."""

    def body(path: str) -> str:
        message = validate_pool_path(path)
        if ".." in path.split("/") or not path.startswith("/"):
            assert message is not None
        if message is not None:
            return "refused"
        assert components(path) == [p for p in path.split("/") if p not in ("", ".")]
        assert clean_path(path) == "/" + "/".join(components(path))
        return "accepted"

    seen = run_property(reliability, "valid pool path = its cleaned form", raw_paths(), body)
    assert seen["accepted"] >= 20
    assert seen["refused"] >= 20


@pytest.mark.security
def test_the_default_pool_guard_only_yields_paths_strictly_inside_the_prefix(reliability):
    def body(example: tuple[str, str]) -> str:
        prefix, name = example
        got = default_pool_path(prefix, name)
        if validate_pool_name(name) is None:
            assert got == prefix + name, (prefix, name)
        if got is None:
            return "refused"
        assert got == prefix + name
        assert "/" not in name
        assert path_allowed(got, [prefix])
        assert clean_path(got) != clean_path(prefix)
        return "accepted"

    prefix = raw_paths(absolute=True).map(lambda p: p.rstrip("/") + "/")
    name = st.sampled_from(["default", "..", ".", "", "a/b", "../x", "...", "x/.."]) | names
    seen = run_property(
        reliability, "default-pool path stays inside its prefix", st.tuples(prefix, name), body
    )
    assert seen["accepted"] >= 20
    assert seen["refused"] >= 20


@pytest.mark.parametrize("query", ["", "?sig=a/b", "#frag"])
def test_image_basename_is_the_last_path_segment(reliability, query):
    def body(parts: list[str]) -> str:
        url = "https://images.example/" + "/".join(parts) + query
        got = image_basename(url)
        last = parts[-1] if parts else ""
        assert got == (None if last in ("", ".", "..") else last), url
        return "refused" if got is None else "accepted"

    segment = st.text(st.sampled_from(list("ab.-_")), max_size=4)
    run_property(
        reliability,
        f"image basename = last segment ({query or 'no query'})",
        st.lists(segment, max_size=4),
        body,
    )


# --- cursors ----------------------------------------------------------------------------


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def test_a_cursor_has_exactly_one_spelling(reliability):
    """Whatever decodes re-encodes to the very same string: no second spelling of a
    position slips through (padding, stray low bits, other case, other offsets)."""

    def body(cursor: str) -> str:
        try:
            when, ident = decode_cursor(cursor)
        except InvalidCursor as exc:
            refusal = str(exc)
        else:
            assert encode_cursor(when, ident) == cursor
            return "accepted"
        assert refusal == "invalid cursor"
        return "refused"

    # Real cursors beside the edited ones, so that the accepted side is never empty by
    # chance (edits alone were accepted 3 to 11 times in 500, varying with test order).
    real = st.builds(lambda when, ident: encode_cursor(when, str(ident)), WHEN, st.uuids())
    seen = run_property(
        reliability,
        "cursor: one spelling per position",
        st.one_of(mutated_cursors(), real),
        body,
        max_examples=500,
    )
    assert seen["refused"] >= 100
    assert seen["accepted"] >= 50


STAMPS = st.one_of(
    WHEN.map(lambda d: d.astimezone(UTC).isoformat(timespec="microseconds")),
    WHEN.map(lambda d: d.isoformat(timespec="microseconds")),  # a non-UTC offset
    WHEN.map(lambda d: d.astimezone(UTC).isoformat()),  # microseconds dropped when zero
    st.builds(
        "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}.{:06d}+00:00".format,
        st.integers(0, 9999),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 25),
        st.integers(0, 61),
        st.integers(0, 61),
        st.integers(0, 999999),
    ),
    st.text(st.sampled_from(list("0123456789-:T.+Z ١")), max_size=34),
)
IDS = st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), uuid_like())


def ref_cursor_text(text: str) -> bool:
    """A canonical UTC stamp (read by ``strptime``, written back identically) and a UUID."""
    stamp, sep, ident = text.partition("|")
    if not sep:
        return False
    try:
        when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f+00:00")
    except ValueError:
        return False
    return when.isoformat(timespec="microseconds") + "+00:00" == stamp and ref_uuid(ident)


def test_decoding_accepts_exactly_canonical_stamps_and_uuids(reliability):
    def body(example: tuple[str, str, str]) -> str:
        stamp, sep, ident = example
        text = stamp + sep + ident
        try:
            when, got_id = decode_cursor(b64(text))
        except InvalidCursor:
            assert not ref_cursor_text(text), text
            return "refused"
        assert ref_cursor_text(text), text
        assert got_id == ident
        assert when.utcoffset() == timedelta(0)
        assert when.isoformat(timespec="microseconds") == stamp
        return "accepted"

    strategy = st.tuples(STAMPS, st.sampled_from(["|", "|", "||", ",", ""]), IDS)
    seen = run_property(
        reliability, "cursor payload = strptime/uuid reference", strategy, body, max_examples=500
    )
    assert seen["accepted"] >= 30
    assert seen["refused"] >= 30

"""Tests for otherix.domain.names: pool, node and VM name syntax, the pool type, the UUID test."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otherix.domain.names import (
    go_quote,
    looks_like_uuid,
    validate_node_name,
    validate_pool_name,
    validate_pool_type,
    validate_vm_name,
)

PROPS = settings(max_examples=200, deadline=None)
NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9._-]*"

# --- pool names (docs/pool-contract.md §8.1) ---


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


# --- VM names ---

VM_RULE = "(letters, digits, '.', '_' and '-', starting and ending with a letter or digit)"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("web-1", None),
        ("a", None),
        ("A.b_c-9", None),
        ("a" * 253, None),
        ("", "name is required"),
        ("a" * 254, "name is too long (max 253 characters)"),
        ("-web", f"invalid VM name '-web' {VM_RULE}"),
        ("web-", f"invalid VM name 'web-' {VM_RULE}"),
        ("web.", f"invalid VM name 'web.' {VM_RULE}"),
        ("my vm", f"invalid VM name 'my vm' {VM_RULE}"),
        ("vm\n", f"invalid VM name 'vm\\n' {VM_RULE}"),
        ("вм", f"invalid VM name 'вм' {VM_RULE}"),
        ("a/b", f"invalid VM name 'a/b' {VM_RULE}"),
    ],
)
def test_vm_name(name, message):
    assert validate_vm_name(name) == message


# --- Go's %q ---


@pytest.mark.parametrize(
    ("raw", "quoted"),
    [
        ("plain", '"plain"'),
        ("", '""'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("tab\there", '"tab\\there"'),
        ("nl\n", '"nl\\n"'),
        ("\x00", '"\\x00"'),
        ("\x7f", '"\\x7f"'),
        ("\u200b", '"\\u200b"'),
        ("\U000e0001", '"\\U000e0001"'),
        ("пул", '"пул"'),
    ],
)
def test_go_quote(raw, quoted):
    assert go_quote(raw) == quoted

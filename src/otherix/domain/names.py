"""Name syntax for pools, nodes and VMs, and the UUID test (docs/pool-contract.md §8.1).

Owns: pool name and type syntax, node-name syntax, VM-name syntax, the
canonical-UUID test used to tell an id from a name in polymorphic path
parameters, and ``go_quote`` (Go's ``%q``, so messages match the reference).

Called by: the API's pool, node and VM services (create/update validation),
the API settings (the configured default pool name), pagination cursors and
the CLI (the ``name|uuid`` argument).

Every ``validate_*`` function returns ``None`` when the input is valid, or the
exact user-facing message otherwise. Nothing here does I/O.
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_NODE_NAME_CHARS",
    "MAX_POOL_NAME_RUNES",
    "MAX_VM_NAME_CHARS",
    "POOL_TYPES",
    "go_quote",
    "looks_like_uuid",
    "validate_node_name",
    "validate_pool_name",
    "validate_pool_type",
    "validate_vm_name",
]

MAX_POOL_NAME_RUNES = 255
MAX_NODE_NAME_CHARS = 253
MAX_VM_NAME_CHARS = 253
POOL_TYPES: tuple[str, ...] = ("local_dir",)

_POOL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*", re.ASCII)
#: node and VM names: letters, digits, ``.``, ``_``, ``-``; a letter or digit at both ends
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?", re.ASCII)
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    re.ASCII,
)

_GO_ESCAPES = {
    "\a": r"\a",
    "\b": r"\b",
    "\f": r"\f",
    "\n": r"\n",
    "\r": r"\r",
    "\t": r"\t",
    "\v": r"\v",
    "\\": r"\\",
    '"': r"\"",
}


def go_quote(s: str) -> str:
    """Quote ``s`` the way Go's ``%q`` does, so messages match the reference."""
    out: list[str] = ['"']
    for ch in s:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def validate_pool_name(name: str) -> str | None:
    """Check a pool name: 1..255 runes matching ``[A-Za-z0-9][A-Za-z0-9._-]*``."""
    if name == "":
        return "name is required"
    if len(name) > MAX_POOL_NAME_RUNES:
        return f"name is too long (max {MAX_POOL_NAME_RUNES} runes)"
    if _POOL_NAME_RE.fullmatch(name) is None:
        return f"invalid pool name {go_quote(name)} (must match [A-Za-z0-9][A-Za-z0-9._-]*)"
    return None


def validate_pool_type(t: str) -> str | None:
    """Check a pool type; only ``local_dir`` exists, compared case-sensitively."""
    if t in POOL_TYPES:
        return None
    return f"invalid storage pool type {go_quote(t)} (must be one of: {', '.join(POOL_TYPES)})"


def validate_node_name(name: str) -> str | None:
    """Check a node name: 1..253 letters, digits, ``.``, ``_``, ``-``; alnum at both ends."""
    if name == "":
        return "node name is required"
    if len(name) > MAX_NODE_NAME_CHARS:
        return f"node name is too long (max {MAX_NODE_NAME_CHARS} characters)"
    if _LABEL_RE.fullmatch(name) is None:
        return (
            f"invalid node name {go_quote(name)} (letters, digits, '.', '_' and '-', "
            "starting and ending with a letter or digit)"
        )
    return None


def validate_vm_name(name: str) -> str | None:
    """1..253 letters, digits, ``.``, ``_``, ``-``, starting and ending with a letter or digit."""
    if name == "":
        return "name is required"
    if len(name) > MAX_VM_NAME_CHARS:
        return f"name is too long (max {MAX_VM_NAME_CHARS} characters)"
    if _LABEL_RE.fullmatch(name) is None:
        return (
            f"invalid VM name {name!r} (letters, digits, '.', '_' and '-', "
            "starting and ending with a letter or digit)"
        )
    return None


def looks_like_uuid(s: str) -> bool:
    """Whether ``s`` is a canonical 8-4-4-4-12 hex UUID (either case)."""
    return _UUID_RE.fullmatch(s) is not None

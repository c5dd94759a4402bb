"""Pure input rules for storage pools and nodes (docs/pool-contract.md §8).

Owns: pool name/type/path syntax, the path allowlist check, Go's
``filepath.Clean`` (ported exactly, because the allowlist is defined in its
terms), allowlist config validation, the default-pool auto-provision path
guard, node-name syntax and the canonical-UUID test used to tell an id from a
name in polymorphic path parameters.

Called by: the API's pool services (create/update validation, allowlist,
auto-provisioning), the config loader (allowlist validation), the CLI (the
``name|uuid`` argument) and the agent (safe path segments).

Every ``validate_*`` function returns ``None`` when the input is valid, or the
exact user-facing message of docs/pool-contract.md §4.2 otherwise. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit

__all__ = [
    "MAX_NODE_NAME_CHARS",
    "MAX_POOL_NAME_RUNES",
    "MAX_POOL_PATH_BYTES",
    "POOL_TYPES",
    "clean_path",
    "default_pool_path",
    "looks_like_uuid",
    "path_allowed",
    "paths_overlap",
    "pool_path_allowed",
    "validate_allowed_prefixes",
    "validate_node_name",
    "validate_pool_name",
    "validate_pool_path",
    "validate_pool_type",
]

MAX_POOL_NAME_RUNES = 255
MAX_POOL_PATH_BYTES = 1024
MAX_NODE_NAME_CHARS = 253
POOL_TYPES: tuple[str, ...] = ("local_dir",)

_POOL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*", re.ASCII)
_NODE_NAME_RE = re.compile(r"[a-z0-9A-Z](?:[A-Za-z0-9._-]*[A-Za-z0-9])?", re.ASCII)
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


def _go_quote(s: str) -> str:
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
        return f"invalid pool name {_go_quote(name)} (must match [A-Za-z0-9][A-Za-z0-9._-]*)"
    return None


def validate_pool_type(t: str) -> str | None:
    """Check a pool type; only ``local_dir`` exists, compared case-sensitively."""
    if t in POOL_TYPES:
        return None
    return f"invalid storage pool type {_go_quote(t)} (must be one of: {', '.join(POOL_TYPES)})"


def validate_pool_path(path: str) -> str | None:
    """Check pool path syntax; the path itself is stored exactly as typed."""
    if path == "":
        return "path is required"
    if len(path.encode("utf-8", errors="surrogatepass")) > MAX_POOL_PATH_BYTES:
        return f"path is too long (max {MAX_POOL_PATH_BYTES} bytes)"
    if not path.startswith("/"):
        return 'path must be absolute (start with "/")'
    if "\x00" in path:
        return "path must not contain the NUL byte"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        # Legal in a Linux file name, but a newline or an escape sequence in a
        # pool path breaks every table, log line and script that prints it.
        return "path must not contain control characters (newline, tab, escape ...)"
    if ".." in path.split("/"):
        return "path must not contain a '..' segment"
    return None


def clean_path(path: str) -> str:
    """Return the shortest lexically equivalent path, exactly like Go's ``filepath.Clean``.

    Collapses repeated slashes, drops ``.`` segments, resolves ``..`` against
    the preceding segment (``..`` at the root stays at the root) and removes
    any trailing slash except for the root itself. Unlike
    ``posixpath.normpath``, a leading ``//`` becomes ``/``. An empty path
    cleans to ``.``.
    """
    if path == "":
        return "."
    rooted = path.startswith("/")
    stack: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if stack and stack[-1] != "..":
                stack.pop()
            elif not rooted:
                stack.append("..")
            # A rooted ".." above the root is dropped.
            continue
        stack.append(seg)
    joined = "/".join(stack)
    if rooted:
        return "/" + joined
    return joined or "."


def _under(candidate: str, prefix: str) -> bool:
    """Whether cleaned ``candidate`` is ``prefix`` or below it (both absolute, cleaned)."""
    if prefix == "/":
        return True
    return (candidate + "/").startswith(prefix + "/")


def path_allowed(path: str, prefixes: Sequence[str]) -> bool:
    """Boundary-safe allowlist check: ``Clean(path)+"/"`` starts with ``Clean(prefix)+"/"``.

    ``/var/lib/otherix/pools-evil`` is therefore not under
    ``/var/lib/otherix/pools/``, while the prefix directory itself is. The
    root prefix ``/`` admits every absolute path. Relative paths and
    relative prefixes never match (config validation rejects the latter).
    """
    if not path.startswith("/"):
        return False
    candidate = clean_path(path)
    return any(p.startswith("/") and _under(candidate, clean_path(p)) for p in prefixes)


def pool_path_allowed(path: str, prefixes: Sequence[str]) -> bool:
    """The API's create rule: :func:`path_allowed`, and not an allowed prefix itself.

    Pools live *below* a prefix (issue 12, docs/pool-contract.md §8.3; an older
    design admitted the prefix directory itself): a pool at the prefix would
    contain every other pool there, the auto-provisioned default included.
    Compared cleaned, so ``/srv/pools/`` and ``/srv/pools//`` are the prefix
    ``/srv/pools/`` too. :func:`path_allowed` (docs/pool-contract.md §8.3) keeps
    admitting the prefix; the agent's own allowlist uses it.
    """
    if not path_allowed(path, prefixes):
        return False
    cleaned = clean_path(path)
    return all(cleaned != clean_path(p) for p in prefixes if p.startswith("/"))


def paths_overlap(a: str, b: str) -> bool:
    """Whether two absolute paths name the same directory or one lies inside the other.

    Compared cleaned (``//srv/p/./x`` is ``/srv/p/x``) and boundary-safe
    (``/srv/p`` and ``/srv/p2`` do not overlap). The rule that keeps one
    directory to one pool on a node; the agent applies it to realpaths.
    """
    ca, cb = clean_path(a), clean_path(b)
    return _under(ca, cb) or _under(cb, ca)


def validate_allowed_prefixes(prefixes: Sequence[str]) -> str | None:
    """Validate ``storage_pools.allowed_path_prefixes``.

    The list needs at least one entry; each entry must be absolute and end with ``/``.
    """
    if len(prefixes) == 0:
        return "allowed_path_prefixes must contain at least one entry"
    for prefix in prefixes:
        if not prefix.startswith("/"):
            return f'allowed path prefix {_go_quote(prefix)} must be absolute (start with "/")'
        if not prefix.endswith("/"):
            return f'allowed path prefix {_go_quote(prefix)} must end with "/"'
        if "\x00" in prefix:
            return f"allowed path prefix {_go_quote(prefix)} must not contain the NUL byte"
    return None


def default_pool_path(prefix: str, name: str) -> str | None:
    """Path for an auto-provisioned pool, or ``None`` when ``name`` is unsafe.

    The guard of docs/pool-contract.md §8.4: a name containing ``/``, equal to ``.`` or
    ``..``, or whose cleaned ``prefix+name`` escapes the prefix (or collapses
    onto the prefix itself) is refused. Otherwise the path is ``prefix+name``
    as typed.
    """
    if "/" in name or name in ("", ".", ".."):
        return None
    if not prefix.startswith("/"):
        return None
    candidate = prefix + name
    cleaned = clean_path(candidate)
    cleaned_prefix = clean_path(prefix)
    if cleaned == cleaned_prefix or not _under(cleaned, cleaned_prefix):
        return None
    return candidate


def validate_node_name(name: str) -> str | None:
    """Check a node name: 1..253 letters, digits, ``.``, ``_``, ``-``; alnum at both ends."""
    if name == "":
        return "node name is required"
    if len(name) > MAX_NODE_NAME_CHARS:
        return f"node name is too long (max {MAX_NODE_NAME_CHARS} characters)"
    if _NODE_NAME_RE.fullmatch(name) is None:
        return (
            f"invalid node name {_go_quote(name)} (letters, digits, '.', '_' and '-', "
            "starting and ending with a letter or digit)"
        )
    return None


def looks_like_uuid(s: str) -> bool:
    """Whether ``s`` is a canonical 8-4-4-4-12 hex UUID (either case)."""
    return _UUID_RE.fullmatch(s) is not None


#: VM phases (docs/pool-contract.md §7); a VM whose disk is ready is ``stopped``.
PHASES: tuple[str, ...] = ("pending", "creating", "stopped", "error", "deleting")


def image_basename(url: str) -> str | None:
    """The cache key of an image URL: its last path segment, query dropped
    (docs/pool-contract.md §10.2)."""
    segment = urlsplit(url).path.rsplit("/", 1)[-1]
    if segment in ("", ".", ".."):
        return None
    return segment

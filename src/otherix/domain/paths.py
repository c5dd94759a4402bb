"""Pool paths: syntax, cleaning, the allowlist and the auto-provision guard
(docs/pool-contract.md §8.2-§8.4, §5.3).

Owns: pool path syntax (absolute, no NUL, no control character, no ``..``
segment), Go's ``filepath.Clean`` (ported exactly, because the allowlist is
defined in its terms), the boundary-safe "at or below a prefix" test, the
API's create rule (strictly below a prefix: issue 12), the overlap of two
paths, allowlist config validation and the default-pool auto-provision path
guard.

Called by: the API's pool services (create validation, allowlist,
auto-provisioning), the config loader (allowlist validation) and the agent
(its own allowlist and its realpath overlap check).

Every ``validate_*`` function returns ``None`` when the input is valid, or the
exact user-facing message otherwise. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from otherix.domain.names import go_quote

__all__ = [
    "MAX_POOL_PATH_BYTES",
    "clean_path",
    "default_pool_path",
    "has_control_character",
    "path_allowed",
    "paths_overlap",
    "pool_path_allowed",
    "under",
    "validate_allowed_prefixes",
    "validate_pool_path",
]

MAX_POOL_PATH_BYTES = 1024


def has_control_character(s: str) -> bool:
    """Whether ``s`` holds a C0 control character (U+0000..U+001F) or DEL (U+007F)."""
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in s)


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
    if has_control_character(path):
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


def under(candidate: str, prefix: str) -> bool:
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
    return any(p.startswith("/") and under(candidate, clean_path(p)) for p in prefixes)


def pool_path_allowed(path: str, prefixes: Sequence[str]) -> bool:
    """The API's create rule: :func:`path_allowed`, and not an allowed prefix itself.

    Pools live *below* a prefix (issue 12, a departure from the reference
    rule of docs/pool-contract.md §8.3, which admits the prefix directory
    itself): a pool at the prefix would
    contain every other pool there, the auto-provisioned default included.
    Compared cleaned, so ``/srv/pools/`` and ``/srv/pools//`` are the prefix
    ``/srv/pools/`` too. :func:`path_allowed` (the reference rule) keeps
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
    return under(ca, cb) or under(cb, ca)


def validate_allowed_prefixes(prefixes: Sequence[str]) -> str | None:
    """Validate ``storage_pools.allowed_path_prefixes``.

    The list needs at least one entry; each entry must be absolute and end with ``/``.
    """
    if len(prefixes) == 0:
        return "allowed_path_prefixes must contain at least one entry"
    for prefix in prefixes:
        if not prefix.startswith("/"):
            return f'allowed path prefix {go_quote(prefix)} must be absolute (start with "/")'
        if not prefix.endswith("/"):
            return f'allowed path prefix {go_quote(prefix)} must end with "/"'
        if "\x00" in prefix:
            return f"allowed path prefix {go_quote(prefix)} must not contain the NUL byte"
    return None


def default_pool_path(prefix: str, name: str) -> str | None:
    """Path for an auto-provisioned pool, or ``None`` when ``name`` is unsafe.

    The guard of docs/pool-contract.md §5.3: a name containing ``/``, equal to ``.`` or
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
    if cleaned == cleaned_prefix or not under(cleaned, cleaned_prefix):
        return None
    return candidate

"""Strict input: the rules every request body, query string, path and header meet.

Owns :func:`decode` (a request body: bytes to a JSON value, or a refusal) and
the text-level depth helpers the stored-JSON repair shares (``too_deep``,
``deep_path``); the text rule itself is ``otherix.models.textrules``. The
API's input boundary (``otherix.api.inputguard``) applies them to every
request before any route sees it; the rules are written down in
``docs/architecture.md`` ("Input rules"). Nothing here does I/O.

- Text: UTF-8 on the wire; every string and every object key a sequence of
  Unicode scalar values other than U+0000. So no unpaired surrogate (a
  ``\\ud800`` escape without its partner, which cannot be encoded as UTF-8
  and breaks every answer that holds it) and no NUL (PostgreSQL stores
  neither in text nor in JSONB).
- Nesting: at most :data:`MAX_DEPTH` (64) objects and arrays inside each
  other, the outermost counting as 1. Deeper documents are refused before
  they can reach a recursive serialiser.
- Numbers: every number lies within ±(2^63-1), what a BIGINT column holds
  on SQLite and PostgreSQL. That bounds non-integers too: PostgreSQL's JSONB
  writes ``1.5e300`` back as a 301-digit integer, which no client could send
  again. An integer literal is checked exactly, a number with a fraction or
  an exponent as the double it parses to (so ``1e400`` is refused, ``0.5``
  and ``1e-300`` are fine). ``NaN``, ``Infinity`` and ``-Infinity`` are not
  JSON and are refused.
- Objects name each key once: parsers disagree on which of two equal keys
  wins, so a proxy and this server could see different requests.

A refusal (:class:`JsonRefused`) names the value by its dotted path
(``config.a.0.b``; ``""`` for the body as a whole) and says what is wrong.
The common case costs one C-speed parse (with a hook per object, for
duplicate keys) and a few regular-expression scans of the text; a second,
path-tracking parse runs only when those saw a possible problem: an escape
that could decode to a surrogate or NUL, invalid UTF-8, a number that may be
out of range, ``NaN``/``Infinity``, a repeated key, or nesting over 64.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from otherix.models.textrules import NUL, field_name, text_problem

__all__ = [
    "INT64_MAX",
    "JSON_STRING",
    "MAX_DEPTH",
    "NUL",
    "JsonRefused",
    "MalformedJson",
    "decode",
    "deep_path",
    "too_deep",
]

MAX_DEPTH = 64
INT64_MAX = 2**63 - 1
_MAX_INT_CHARS = len(str(-INT64_MAX))  # 20: longer integer literals are out of range
#: an escape that decodes to an unpaired surrogate or to NUL (a pair such as
#: ``\ud83d\ude00``, as ``json.dumps`` writes an emoji, does not match). Exact when
#: the text has no escaped backslash before a ``u``, which ``_escapes_suspect`` checks.
_SUSPECT = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    r"|\\u0000"
)
DEEP = f"nested deeper than {MAX_DEPTH} levels"


class JsonRefused(ValueError):
    """A well-formed body that breaks a rule; ``field`` is the value's dotted path."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field or 'body'}: {reason}")
        self.field = field
        self.reason = reason


class MalformedJson(ValueError):
    """Not JSON at all (the message is the parser's, with its position)."""


# parsing ---------------------------------------------------------------------------------

#: a JSON string (for the text's skeleton: everything outside strings)
JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
#: for bytes.translate: delete every byte but brackets; then +1 per opening, -1 per closing
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = tuple(1 if b in b"[{" else -1 if b in b"]}" else 0 for b in range(256))
_BRACKET = re.compile(r"[\[\]{}]")
#: bytes.translate table: every decimal digit becomes "0", everything else " "
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
#: 19 digits in a row: outside a string, an integer that may be out of range
#: (numbers with a fraction or exponent meet the ``parse_float`` hook instead)
_LONG_RUN = b"0" * 19


class _Stop(Exception):
    """Raised by the fast parse's hook: the locating parse names the value."""


@dataclass(frozen=True, slots=True)
class _Refused:
    """Put in place of a refused number by the locating parse."""

    reason: str


class _Duplicates(dict[str, Any]):
    """An object that named ``key`` twice (the locating parse only)."""

    key: str = ""


def _fast_float(s: str) -> float:
    value = float(s)
    if -INT64_MAX <= value <= INT64_MAX:  # False for NaN and infinities too
        return value
    raise _Stop


def _fast_constant(_s: str) -> Any:
    raise _Stop


def _fast_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Stop
    return out


def _locate_int(s: str) -> int | _Refused:
    if len(s) <= _MAX_INT_CHARS:
        value = int(s)
        if -INT64_MAX <= value <= INT64_MAX:
            return value
    return _Refused("integer out of range (it must lie within ±(2^63-1))")


def _locate_float(s: str) -> float | _Refused:
    value = float(s)
    if -INT64_MAX <= value <= INT64_MAX:
        return value
    return _Refused("number out of range (it must lie within ±(2^63-1))")


def _locate_constant(s: str) -> _Refused:
    return _Refused(f"{s} is not JSON (a number must be finite)")


def _locate_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    seen: set[str] = set()
    dup = _Duplicates(out)
    for key, _ in pairs:
        if key in seen:
            dup.key = key
            break
        seen.add(key)
    return dup


#: the common case: C-speed parse with hooks that only run for objects, numbers
#: with a fraction or exponent, and NaN/Infinity; integers and depth are checked
#: on the text
_FAST = json.JSONDecoder(
    parse_float=_fast_float, parse_constant=_fast_constant, object_pairs_hook=_fast_object
)
#: only after the fast pass saw a possible problem: every refused value marked
_LOCATE = json.JSONDecoder(
    parse_int=_locate_int,
    parse_float=_locate_float,
    parse_constant=_locate_constant,
    object_pairs_hook=_locate_object,
)


def _skeleton(text: str) -> str:
    return JSON_STRING.sub("", text)


def _escapes_suspect(raw: bytes, text: str) -> bool:
    """True when an escape may decode to an unpaired surrogate or NUL."""
    if b"\\u" not in raw:
        return False
    return b"\\\\u" in raw or _SUSPECT.search(text) is not None


def _integers_suspect(raw: bytes, text: str) -> bool:
    """True when an integer of 19 digits or more may stand outside a string."""
    if _LONG_RUN not in raw.translate(_DIGITS):
        return False
    return _LONG_RUN in _skeleton(text).encode("utf-8", "surrogateescape").translate(_DIGITS)


def too_deep(raw: bytes, text: str) -> bool:
    """True when ``text`` (``raw`` encoded) nests containers deeper than ``MAX_DEPTH``."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False
    skeleton = _skeleton(text).encode("utf-8", "surrogateescape")
    brackets = skeleton.translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > MAX_DEPTH


_Link = tuple[str | int, "_Link | None"] | None


def _path(link: _Link) -> str:
    parts: list[str | int] = []
    while link is not None:
        parts.append(link[0])
        link = link[1]
    return field_name(parts[::-1])


def _scalar_problem(item: Any, from_bytes: bool) -> str | None:
    if isinstance(item, str):
        if item.isascii() and "\x00" not in item:
            return None
        return text_problem(item, from_bytes=from_bytes)
    if isinstance(item, _Refused):
        return item.reason
    return None


def _first_problem(value: Any, from_bytes: bool) -> tuple[str, str] | None:
    """The first refused value (scalars of a container before its containers), as
    (dotted path, reason). Paths are linked lists, built into text only for the
    one value refused."""
    if not isinstance(value, dict | list):
        why = _scalar_problem(value, from_bytes)
        return ("", why) if why else None
    stack: list[tuple[Any, _Link, int]] = [(value, None, 1)]
    while stack:
        item, link, depth = stack.pop()
        if depth > MAX_DEPTH:
            return _path(link), DEEP
        nested: list[tuple[Any, _Link, int]] = []
        if isinstance(item, dict):
            for key, child in item.items():
                if not key.isascii() or "\x00" in key:
                    why = text_problem(key, from_bytes=from_bytes)
                    if why:
                        return _path((key, link)), f"{why} in the key"
                if isinstance(child, dict | list):
                    nested.append((child, (key, link), depth + 1))
                elif (why := _scalar_problem(child, from_bytes)) is not None:
                    return _path((key, link)), why
            if isinstance(item, _Duplicates):
                return _path((item.key, link)), "duplicate key (an object names each key once)"
        else:
            for i, child in enumerate(item):
                if isinstance(child, dict | list):
                    nested.append((child, (i, link), depth + 1))
                elif (why := _scalar_problem(child, from_bytes)) is not None:
                    return _path((i, link)), why
        stack.extend(reversed(nested))
    return None


def _parse(decoder: json.JSONDecoder, text: str) -> Any:
    try:
        return decoder.decode(text)
    except RecursionError:
        raise JsonRefused(deep_path(text), DEEP) from None
    except json.JSONDecodeError as exc:
        raise MalformedJson(str(exc)) from None
    except ValueError:  # an integer past int()'s digit limit (fast parse only)
        if decoder is _LOCATE:
            raise
        raise _Stop from None


def decode(raw: bytes) -> Any:
    """The body's JSON value, or :class:`MalformedJson` / :class:`JsonRefused`."""
    from_bytes = False
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text, from_bytes = raw.decode("utf-8", "surrogateescape"), True
    try:
        value = _parse(_FAST, text)
        suspect = from_bytes or _escapes_suspect(raw, text) or _integers_suspect(raw, text)
    except _Stop:
        value, suspect = None, True
    if too_deep(raw, text):
        raise JsonRefused(deep_path(text), DEEP)
    return _located(text, from_bytes) if suspect else value


def deep_path(text: str) -> str:
    """The dotted path of the first container nested deeper than ``MAX_DEPTH``.

    Found on the text, so it works where a parse would recurse too deep: the
    text up to that container, closed with ``null`` and the brackets still open,
    is parsed (64 levels at most) and the path to its last value is that path.
    """
    blank = JSON_STRING.sub(lambda m: '"' + "_" * (len(m.group()) - 2) + '"', text)
    open_: list[str] = []
    for m in _BRACKET.finditer(blank):
        if m.group() in "]}":
            if open_:
                open_.pop()
            continue
        if len(open_) < MAX_DEPTH:
            open_.append(m.group())
            continue
        closers = "".join("]" if c == "[" else "}" for c in reversed(open_))
        try:
            node = _LOCATE.decode(text[: m.start()] + "null" + closers)
        except ValueError:
            return ""
        parts: list[str | int] = []
        while isinstance(node, dict | list) and node:
            if isinstance(node, dict):
                key = next(reversed(node))
                parts.append(key)
                node = node[key]
            else:
                parts.append(len(node) - 1)
                node = node[-1]
        return field_name(parts)
    return ""


def _located(text: str, from_bytes: bool) -> Any:
    """Parse again marking every refused value; raise for the first one (or return
    the value when the fast pass's suspicion was unfounded, e.g. a surrogate pair)."""
    value = _parse(_LOCATE, text)
    problem = _first_problem(value, from_bytes)
    if problem is not None:
        raise JsonRefused(*problem)
    return value

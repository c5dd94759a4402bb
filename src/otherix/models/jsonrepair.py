"""Repair of stored JSON values that break today's input rules.

Owns :func:`repair_text` (a stored JSON text to its repaired text) and
:func:`repair_value` (a parsed value, repaired in place), with the counts of
what they changed (:class:`Repairs`). Called by migration ``0008`` (text repair)
(rows at rest) and by the store's JSON column reader and writer
(``otherix.store.jsontext``: a value that still holds an unpaired surrogate
is served and written repaired, never failing a list). Nothing here does I/O.

Before strict input (``otherix.models.strictjson``) the API stored whatever
Python's ``json`` module accepts. The repairs, chosen so that the repaired
value reads as the old one did wherever it could be read at all:

- every unpaired surrogate, in a string or an object key, becomes U+FFFD
  (REPLACEMENT CHARACTER); a repaired key that collides with a key already
  in the object replaces that key's value (the object keeps one of them);
- ``NaN``, ``Infinity`` and ``-Infinity`` become ``null``, which is how the
  API has always shown them;
- a container nested deeper than ``MAX_DEPTH`` (64; the column's value
  counting as 1) becomes a string holding its JSON text, so nothing is lost
  and nothing recursive meets more than 64 levels.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from otherix.models.strictjson import JSON_STRING, MAX_DEPTH, too_deep

__all__ = ["Repairs", "may_hold_lone_surrogate", "repair_text", "repair_value"]

#: an escape of an unpaired surrogate (exact unless an escaped backslash stands
#: before a ``u``, which :func:`may_hold_lone_surrogate` also counts as suspect)
_LONE_ESCAPE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
_NON_FINITE = re.compile(r"NaN|Infinity")
_BRACKET = re.compile(r"[\[\]{}]")


@dataclass
class Repairs:
    surrogates: int = 0  # unpaired surrogates replaced with U+FFFD
    non_finite: int = 0  # NaN / Infinity / -Infinity replaced with null
    too_deep: int = 0  # containers below level 64 replaced with their JSON text

    def __bool__(self) -> bool:
        return bool(self.surrogates or self.non_finite or self.too_deep)

    def add(self, other: Repairs) -> None:
        self.surrogates += other.surrogates
        self.non_finite += other.non_finite
        self.too_deep += other.too_deep

    def describe(self) -> str:
        parts = [
            f"{self.surrogates} unpaired surrogate(s) replaced with U+FFFD",
            f"{self.non_finite} NaN/Infinity replaced with null",
            f"{self.too_deep} container(s) nested deeper than {MAX_DEPTH} kept as JSON text",
        ]
        return ", ".join(p for p in parts if not p.startswith("0 "))


def may_hold_lone_surrogate(text: str) -> bool:
    """False only when JSON ``text`` certainly has no unpaired surrogate escape."""
    if "\\u" not in text:
        return False
    return "\\\\u" in text or _LONE_ESCAPE.search(text) is not None


def _fix_text(s: str, counts: Repairs) -> str:
    if s.isascii():
        return s
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        out = []
        for ch in s:
            if 0xD800 <= ord(ch) <= 0xDFFF:
                counts.surrogates += 1
                out.append("\ufffd")
            else:
                out.append(ch)
        return "".join(out)
    return s


def repair_value(value: Any, counts: Repairs | None = None) -> tuple[Any, Repairs]:
    """``value`` (a fresh ``json.loads`` result, changed in place) repaired."""
    counts = counts if counts is not None else Repairs()
    holder: list[Any] = [value]
    stack: list[tuple[list[Any] | dict[str, Any], int]] = [(holder, 0)]

    def visit(child: Any, depth: int) -> Any:
        if isinstance(child, dict | list):
            if depth > MAX_DEPTH:
                counts.too_deep += 1
                try:
                    return json.dumps(child, separators=(",", ":"))
                except (RecursionError, ValueError):
                    return None
            stack.append((child, depth))
            return child
        if isinstance(child, str):
            return _fix_text(child, counts)
        if isinstance(child, float) and not math.isfinite(child):
            counts.non_finite += 1
            return None
        return child

    while stack:
        container, depth = stack.pop()
        if isinstance(container, list):
            for i, child in enumerate(container):
                container[i] = visit(child, depth + 1)
            continue
        items = list(container.items())
        container.clear()
        for key, child in items:
            container[_fix_text(key, counts)] = visit(child, depth + 1)
    return holder[0], counts


def _cut_deep(text: str, counts: Repairs) -> str:
    """``text`` with every container at level ``MAX_DEPTH + 1`` replaced by a JSON
    string of its text. Works on the text, so no parse meets the deep part."""
    blank = JSON_STRING.sub(lambda m: '"' + "_" * (len(m.group()) - 2) + '"', text)
    out: list[str] = []
    done = 0  # text[:done] is in out
    depth = 0
    cut_at = -1
    for m in _BRACKET.finditer(blank):
        if m.group() in "[{":
            depth += 1
            if depth == MAX_DEPTH + 1:
                cut_at = m.start()
        else:
            if depth == MAX_DEPTH + 1 and cut_at >= 0:
                out.append(text[done:cut_at])
                out.append(json.dumps(text[cut_at : m.end()]))
                done = m.end()
                counts.too_deep += 1
                cut_at = -1
            depth -= 1
    out.append(text[done:])
    return "".join(out)


def repair_text(text: str) -> tuple[str | None, Repairs]:
    """The repaired JSON text, or None when ``text`` needs no repair."""
    counts = Repairs()
    changed = False
    if too_deep(text.encode("utf-8", "surrogatepass"), text):
        text = _cut_deep(text, counts)
        changed = True
    skeleton_suspect = _NON_FINITE.search(text) is not None and (
        _NON_FINITE.search(JSON_STRING.sub("", text)) is not None
    )
    if may_hold_lone_surrogate(text) or skeleton_suspect:
        value, counts = repair_value(json.loads(text), counts)
        if counts.surrogates or counts.non_finite:
            text = json.dumps(value)
            changed = True
    return (text if changed else None), counts

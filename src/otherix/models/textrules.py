"""The text rule for strings, query strings and paths (strict input).

Owns :func:`text_problem` (why one decoded string is not valid text here),
:func:`percent_decode` (one percent-encoded query or path component, as
strict UTF-8) and :func:`field_name` (a dotted path, printable even when a
key is not valid text). Used by ``otherix.models.strictjson`` (every string
and key of a body) and ``otherix.api.inputguard`` (query, path, headers).
Nothing here does I/O.

Valid text is UTF-8 made of Unicode scalar values other than U+0000: no
unpaired surrogate (it cannot be encoded as UTF-8, so every answer holding
it fails), no invalid or overlong UTF-8, no NUL (PostgreSQL stores it in
neither text nor JSONB).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

__all__ = ["NUL", "field_name", "percent_decode", "text_problem"]

NUL = "contains U+0000 (NUL), which is not allowed"


def text_problem(s: str, *, from_bytes: bool = False) -> str | None:
    """Why ``s`` is not valid text here, or None. ``from_bytes``: ``s`` was decoded
    with ``surrogateescape``, so U+DC80..U+DCFF stand for bytes that are not UTF-8."""
    if s.isascii():
        return NUL if "\x00" in s else None
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(s[exc.start])
        if from_bytes and 0xDC80 <= code <= 0xDCFF:
            return f"not valid UTF-8 (byte 0x{code - 0xDC00:02X} at character {exc.start})"
        where = f"U+{code:04X} at character {exc.start}"
        return f"not valid Unicode text (an unpaired surrogate {where})"
    return NUL if "\x00" in s else None


def _show(part: str | int) -> str:
    """A path part as printable, encodable text (a bad key is shown escaped)."""
    if isinstance(part, int):
        return str(part)
    shown = part.encode("utf-8", "backslashreplace").decode("utf-8")
    return shown.replace("\x00", "\\u0000")


def field_name(path: Sequence[str | int]) -> str:
    return ".".join(_show(p) for p in path)


def percent_decode(raw: bytes, *, plus_is_space: bool = False) -> tuple[str, str | None]:
    """One query-string or path component, percent-decoded as strict UTF-8.

    Returns ``(text, None)``, or ``(shown, reason)`` when the component is not
    valid text (``shown`` is the component as printable text, for the message).
    """
    if plus_is_space:
        raw = raw.replace(b"+", b" ")
    data = unquote_to_bytes(raw)
    shown = data.decode("utf-8", "backslashreplace").replace("\x00", "\\u0000")
    if not raw.isascii():
        return shown, "holds a raw byte above 0x7F (percent-encode it as UTF-8)"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        lead = data[exc.start]
        nxt = data[exc.start + 1] if exc.start + 1 < len(data) else 0
        if lead == 0xED and nxt >= 0xA0:
            return shown, "not valid UTF-8 once percent-decoded (it encodes a surrogate)"
        return shown, f"not valid UTF-8 once percent-decoded (byte 0x{lead:02X})"
    if "\x00" in text:
        return shown, NUL
    return text, None

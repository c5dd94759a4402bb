"""Opaque keyset cursors and list-limit rules (docs/pool-contract.md §1.2).

Owns: the cursor wire format for lists ordered by ``(created_at, id)``
ascending, and the ``limit`` query-parameter rule (default 50, min 1, values
above 200 clamped).

Called by: API list routes/services (decode the ``cursor`` query parameter,
encode ``meta.next_cursor`` from the last row) and the store's keyset
queries. Clients treat the cursor as an opaque string.

Format: unpadded urlsafe base64 of ``"<created_at>|<id>"``, where
``created_at`` is ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00`` (always UTC, always
microseconds) and ``id`` is a canonical UUID. Decoding is strict: anything
else raises ``InvalidCursor``, which the API renders as
``400 validation_failed "invalid cursor"``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from otherix.domain.names import looks_like_uuid

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_CURSOR_LENGTH",
    "MAX_LIMIT",
    "InvalidCursor",
    "clamp_limit",
    "decode_cursor",
    "encode_cursor",
]

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_CURSOR_LENGTH = 512

_SEPARATOR = "|"
_B64_RE = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00", re.ASCII)


class InvalidCursor(ValueError):
    """A ``cursor`` value that this server did not produce."""

    def __init__(self, message: str = "invalid cursor") -> None:
        super().__init__(message)


def encode_cursor(created_at: datetime, id: str) -> str:
    """Encode the keyset position of the last row on a page.

    ``created_at`` must be timezone-aware (it is normalised to UTC) and
    ``id`` a canonical UUID; anything else is a programming error
    (``ValueError``).
    """
    if created_at.tzinfo is None or created_at.utcoffset() is None:
        raise ValueError("cursor created_at must be timezone-aware")
    if not looks_like_uuid(id):
        raise ValueError(f"cursor id must be a UUID, got {id!r}")
    stamp = created_at.astimezone(UTC).isoformat(timespec="microseconds")
    raw = f"{stamp}{_SEPARATOR}{id}".encode("ascii")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(s: str) -> tuple[datetime, str]:
    """Decode a cursor from ``encode_cursor``; raise ``InvalidCursor`` on anything else."""
    if not s or len(s) > MAX_CURSOR_LENGTH or _B64_RE.fullmatch(s) is None:
        raise InvalidCursor()
    padded = s + "=" * (-len(s) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded.encode("ascii"))
        text = raw.decode("ascii")
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursor() from exc
    # Reject non-canonical encodings (stray bits in the last character).
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != s:
        raise InvalidCursor()
    stamp, sep, id_ = text.partition(_SEPARATOR)
    if not sep or _TIMESTAMP_RE.fullmatch(stamp) is None or not looks_like_uuid(id_):
        raise InvalidCursor()
    try:
        created_at = datetime.fromisoformat(stamp)
    except ValueError as exc:
        raise InvalidCursor() from exc
    return created_at.astimezone(UTC), id_


def clamp_limit(limit: int | None, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    """Resolve the ``limit`` query parameter: ``None`` → default, >maximum → maximum.

    Raises ``ValueError("limit must be at least 1")`` for values below 1.
    """
    if limit is None:
        return default
    if limit < 1:
        raise ValueError("limit must be at least 1")
    return min(limit, maximum)


class Keyed(Protocol):
    """A row with the keys a page is ordered by (the store's frozen rows)."""

    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=Mapping[str, Any] | Keyed)


def split_page(rows: Sequence[R], limit: int) -> tuple[list[R], str | None]:
    """Rows fetched with ``limit + 1`` -> (this page, the next page's cursor or None)."""
    if len(rows) <= limit:
        return list(rows), None
    last = rows[limit - 1]
    if isinstance(last, Mapping):
        return list(rows[:limit]), encode_cursor(last["created_at"], last["id"])
    return list(rows[:limit]), encode_cursor(last.created_at, last.id)

"""Durations on the CLI: parsing ``--ttl 24h`` and printing ``1m0s``.

Owns the two conversions between seconds and the duration strings operators
type and read. :func:`parse_duration` accepts Go-style units plus days
(``90s``, ``30m``, ``1h30m``, ``7d``); :func:`format_duration` prints Go's
``time.Duration`` text (``1m0s``, ``300ms``, ``1h0m0s``) so messages such as
``waiting for agent reconciliation (timeout 1m0s)…`` match the reference.
Called by the ``node join-token`` and ``token`` commands and by the waiters.
"""

from __future__ import annotations

import re

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``24h``, ``1h30m``, ``7d``, ``45s``, ``500ms``).

    A bare number is seconds. Raises ``ValueError`` naming the accepted
    units for anything else, including the empty string.
    """
    value = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return float(value)
    parts = _PART.findall(value)
    if not value or "".join(num + unit for num, unit in parts) != value:
        raise ValueError(
            f'invalid duration "{text}" (use a number with a unit: ms, s, m, h or d, e.g. 24h)'
        )
    return sum(float(num) * _UNITS[unit] for num, unit in parts)


def format_duration(seconds: float) -> str:
    """Go's ``Duration.String()`` for ``seconds``: ``1m0s``, ``2s``, ``300ms``, ``0s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms" if ms != int(ms) else f"{int(ms)}ms"
    whole = int(seconds)
    frac = seconds - whole
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    sec_text = f"{secs + frac:g}s" if frac else f"{secs}s"
    if hours:
        return f"{hours}h{minutes}m{sec_text}"
    if minutes:
        return f"{minutes}m{sec_text}"
    return sec_text

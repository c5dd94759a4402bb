"""The one duration grammar: ``24h``, ``1h30m``, ``7d``, ``500ms`` to seconds, and back.

Owns the text form of a duration wherever a person types or reads one: the
config files and ``OTHERIX_*`` variables (``otherix.config.Duration``, which
adds numbers and the negative check) and the CLI's ``--ttl``,
``--expires-in`` and ``--wait-timeout`` flags and wait messages
(``otherix.cli``).

Grammar, case-insensitive, outer white space ignored: a bare number is
seconds (``90``, ``1.5``); otherwise one or more parts ``<number><unit>``
written together, units ``ms``, ``s``, ``m``, ``h``, ``d``, with optional
white space between a number and its unit (``30 s``) but none between parts
(``1h 30m`` is refused, as is a sign). This is the union of the two grammars
that were here before (the CLI's composite, case-insensitive one and the
config's single-unit one that allowed ``30 s``): everything either accepted is
still accepted.

:func:`format_duration` prints Go's ``time.Duration`` text (``1m0s``,
``300ms``, ``1h0m0s``) so messages such as
``waiting for agent reconciliation (timeout 1m0s)…`` match the reference.
Shared and dependency-free: it imports nothing from a process package.
"""

from __future__ import annotations

import re

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = r"\d+(?:\.\d+)?"
_PART = re.compile(rf"({_NUMBER})\s*(ms|s|m|h|d)")
_WHOLE = re.compile(rf"{_NUMBER}|(?:{_NUMBER}\s*(?:ms|s|m|h|d))+")


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``24h``, ``1h30m``, ``7d``, ``45s``, ``500ms``, ``90``).

    Raises ``ValueError`` naming the accepted units for anything else,
    including the empty string.
    """
    value = text.strip().lower()
    if not _WHOLE.fullmatch(value):
        raise ValueError(
            f'invalid duration "{text}" (use a number with a unit: ms, s, m, h or d, e.g. 24h)'
        )
    parts = _PART.findall(value)
    if not parts:
        return float(value)
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

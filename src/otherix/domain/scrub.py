"""Cache scrub schedule and rate (pure; docs/pool-contract.md §10.4).

Owns ``ScrubPolicy`` (the ``scrub`` object of a pool's ``config``), its parser
``parse_scrub_config`` (the API validates a pool's config with it, the agent reads the
declared config with it), ``scrub_due`` (whether a pool's scheduled scrub is due) and
``pace`` (how long a scrub must sleep to stay under its byte rate). No I/O here.

``config.scrub`` (every key optional):

- ``interval``: how often every cache entry is re-hashed against its sidecar (seconds,
  or a duration like ``"12h"``, ``"7d"``; default ``"7d"``; ``0`` or ``"0"`` turns the
  schedule off: ``otherix pool scrub`` still runs one);
- ``max_bytes_per_second``: the most a scrub reads per second, averaged (a positive
  integer; default 64 MiB/s), so the VMs on the pool keep their disk bandwidth.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from otherix.domain.cache import CacheConfigError, parse_duration

__all__ = [
    "DEFAULT_INTERVAL_S",
    "DEFAULT_MAX_BYTES_PER_SECOND",
    "ScrubConfigError",
    "ScrubPolicy",
    "pace",
    "parse_scrub_config",
    "scrub_due",
]

DEFAULT_INTERVAL_S: Final = 7 * 86400.0
DEFAULT_MAX_BYTES_PER_SECOND: Final = 64 * 1024 * 1024
_KEYS: Final = ("interval", "max_bytes_per_second")

#: a bad ``config.scrub`` (``field``: the dotted path, as for ``config.cache``)
ScrubConfigError = CacheConfigError


@dataclass(frozen=True)
class ScrubPolicy:
    #: seconds between two scheduled scrubs; 0: no schedule
    interval_s: float = DEFAULT_INTERVAL_S
    max_bytes_per_second: int = DEFAULT_MAX_BYTES_PER_SECOND


def parse_scrub_config(config: Mapping[str, Any] | None) -> ScrubPolicy:
    """The pool's ``config.scrub`` as a policy; ``ScrubConfigError`` when malformed."""
    raw = (config or {}).get("scrub")
    if raw is None:
        return ScrubPolicy()
    if not isinstance(raw, Mapping):
        raise ScrubConfigError("config.scrub", "must be an object")
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise ScrubConfigError(
            f"config.scrub.{unknown[0]}", f"unknown key (known: {', '.join(_KEYS)})"
        )
    interval = raw.get("interval", DEFAULT_INTERVAL_S)
    if isinstance(interval, str):
        try:
            interval = parse_duration(interval)
        except ValueError as exc:
            raise ScrubConfigError("config.scrub.interval", str(exc)) from None
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0:
        raise ScrubConfigError(
            "config.scrub.interval", 'must be a duration ("12h", "7d"), seconds, or 0 for none'
        )
    rate = raw.get("max_bytes_per_second", DEFAULT_MAX_BYTES_PER_SECOND)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise ScrubConfigError("config.scrub.max_bytes_per_second", "must be a positive integer")
    return ScrubPolicy(interval_s=float(interval), max_bytes_per_second=rate)


def scrub_due(policy: ScrubPolicy, last_completed: float | None, now: float) -> bool:
    """True when the pool's scheduled scrub should run at ``now`` (wall-clock seconds).

    A pool never scrubbed is due at once; one whose last scrub was cut short (a crash)
    still has its previous completion, so it runs again one interval after that.
    """
    if policy.interval_s <= 0:
        return False
    return last_completed is None or now - last_completed >= policy.interval_s


def pace(bytes_done: int, elapsed: float, max_bytes_per_second: int) -> float:
    """Seconds to sleep now so that ``bytes_done`` read in ``elapsed`` seconds averages
    at most ``max_bytes_per_second`` (0 when already slow enough)."""
    return max(0.0, bytes_done / max_bytes_per_second - elapsed)

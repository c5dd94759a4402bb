"""Image cache limits of a pool and which entries to evict (pure; docs/pool-contract.md §10.3).

Owns ``CachePolicy`` (the ``cache`` object of a pool's ``config``), its parser
``parse_cache_config`` (the API validates a pool's config with it; the agent reads the
declared config with it), and ``choose_evictions``: which cache entries to remove, and
why, given the pool's capacity and free space.

``config.cache`` (every key optional; the defaults keep everything unless the pool runs
low on space):

- ``max_bytes``: the most the cache may hold (bytes, an integer); none by default;
- ``min_free_percent``: evict while the pool's free space is under this share of its
  capacity (0-100; default 10; 0 turns it off);
- ``min_age``: an entry used more recently than this is never evicted (seconds, or a
  duration like ``"90s"``, ``"2h"``; default ``"1h"``);
- ``pinned``: image basenames never evicted.

An entry is evicted only if it is not pinned, no VM disk depends on it (``in_use``: the
image of a running VM, or a disk's qcow2 backing file), and it was last used longer ago
than ``min_age``; least recently used first, and only as many as it takes to get back
under both limits. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = [
    "DEFAULT_MIN_AGE_S",
    "DEFAULT_MIN_FREE_PERCENT",
    "CacheEntry",
    "CachePolicy",
    "EvictReason",
    "choose_evictions",
    "parse_cache_config",
]

DEFAULT_MIN_FREE_PERCENT: Final = 10.0
DEFAULT_MIN_AGE_S: Final = 3600.0
_KEYS: Final = ("max_bytes", "min_free_percent", "min_age", "pinned")
_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"2h"``, ``"1d"`` or bare seconds; ValueError otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f'invalid duration "{text}" (e.g. 90s, 15m, 2h, 1d)')
    return float(match.group(1)) * _UNIT[match.group(2) or "s"]


#: ``max_bytes``: the cache is over its cap; ``min_free``: the pool is short of free
#: space; ``prune``: asked for (``otherix pool cache prune``)
EvictReason = Literal["max_bytes", "min_free", "prune"]


@dataclass(frozen=True)
class CachePolicy:
    max_bytes: int | None = None
    min_free_percent: float = DEFAULT_MIN_FREE_PERCENT
    min_age_s: float = DEFAULT_MIN_AGE_S
    pinned: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CacheEntry:
    name: str
    sha256: str
    size_bytes: int
    last_used: float  # wall-clock seconds


class CacheConfigError(ValueError):
    """A bad ``config.cache``; ``field`` is the dotted path of the value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_cache_config(config: Mapping[str, Any] | None) -> CachePolicy:
    """The pool's ``config.cache`` as a policy; ``CacheConfigError`` when malformed."""
    raw = (config or {}).get("cache")
    if raw is None:
        return CachePolicy()
    if not isinstance(raw, Mapping):
        raise CacheConfigError("config.cache", "must be an object")
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise CacheConfigError(
            f"config.cache.{unknown[0]}", f"unknown key (known: {', '.join(_KEYS)})"
        )
    max_bytes = raw.get("max_bytes")
    if max_bytes is not None and (
        isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0
    ):
        raise CacheConfigError("config.cache.max_bytes", "must be a non-negative integer")
    percent = raw.get("min_free_percent", DEFAULT_MIN_FREE_PERCENT)
    if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 <= percent <= 100:
        raise CacheConfigError("config.cache.min_free_percent", "must be a number from 0 to 100")
    age = raw.get("min_age", DEFAULT_MIN_AGE_S)
    if isinstance(age, str):
        try:
            age = parse_duration(age)
        except ValueError as exc:
            raise CacheConfigError("config.cache.min_age", str(exc)) from None
    if isinstance(age, bool) or not isinstance(age, int | float) or age < 0:
        raise CacheConfigError(
            "config.cache.min_age", 'must be a duration ("90s", "2h") or seconds'
        )
    pinned = raw.get("pinned", [])
    if not isinstance(pinned, list) or not all(isinstance(p, str) and p for p in pinned):
        raise CacheConfigError("config.cache.pinned", "must be a list of image names")
    return CachePolicy(
        max_bytes=max_bytes,
        min_free_percent=float(percent),
        min_age_s=float(age),
        pinned=frozenset(pinned),
    )


def choose_evictions(
    entries: Iterable[CacheEntry],
    *,
    capacity: int,
    available: int,
    policy: CachePolicy,
    in_use: Iterable[str],
    now: float,
    prune: bool = False,
) -> list[tuple[CacheEntry, EvictReason]]:
    """The entries to evict, least recently used first, each with why (module docstring).
    ``in_use``: sha256s or basenames that VM disks depend on. ``prune``: every evictable
    entry, whatever the limits."""
    used = set(in_use)
    every = list(entries)
    candidates = sorted(
        (
            e
            for e in every
            if e.name not in policy.pinned
            and e.sha256 not in used
            and e.name not in used
            and now - e.last_used >= policy.min_age_s
        ),
        key=lambda e: (e.last_used, e.name),
    )
    if prune:
        return [(e, "prune") for e in candidates]
    total = sum(e.size_bytes for e in every)
    free_floor = capacity * policy.min_free_percent / 100
    chosen: list[tuple[CacheEntry, EvictReason]] = []
    for entry in candidates:
        if policy.max_bytes is not None and total > policy.max_bytes:
            reason: EvictReason = "max_bytes"
        elif policy.min_free_percent > 0 and available < free_floor:
            reason = "min_free"
        else:
            break
        chosen.append((entry, reason))
        total -= entry.size_bytes
        available += entry.size_bytes
    return chosen

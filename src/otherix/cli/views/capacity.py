"""Time to full in the CLI (issue 16.6): the trend line of ``pool get`` and the
``pool history`` table. Read the bodies as the server sent them (``output.wire``).

- ``trend_text``: ``+1.20 GiB/day, full in ~3 days`` (filling), ``-0.10 GiB/day,
  not filling`` (flat or shrinking: never full at this rate), or ``unknown (2
  samples; needs 3 over 2 sample intervals)``; ``-`` when the view has none.
  ``pool get`` prints it once the instance has a sample (``has_samples``), as it
  prints ``usage:`` once the agent measured it.
- ``history_table``: TIME USED CAPACITY AVAILABLE VM-DISKS CACHE, oldest first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from otherix.cli.output import human_bytes, render_table

__all__ = ["full_in_text", "has_samples", "history_table", "trend_text"]

GiB = float(1 << 30)


def full_in_text(days: float) -> str:
    """``~3 days``, ``~5 hours``, ``~12 minutes``, ``now``: rounded as a person would."""
    if days <= 0:
        return "now"
    if days >= 2:
        return f"~{round(days):,} days"
    hours = days * 24
    if hours >= 2:
        return f"~{round(hours)} hours"
    minutes = hours * 60
    if minutes >= 1:
        return f"~{round(minutes)} minutes"
    return "under a minute"


def has_samples(trend: object) -> bool:
    """Whether ``pool get`` prints the trend line: not before the first sample."""
    return isinstance(trend, Mapping) and bool(trend.get("samples"))


def trend_text(trend: object) -> str:
    if not isinstance(trend, Mapping):
        return "-"
    state = trend.get("state")
    per_day = trend.get("bytes_per_day")
    rate = "" if per_day is None else f"{float(per_day) / GiB:+.2f} GiB/day"
    if state == "filling":
        return f"{rate}, full in {full_in_text(float(trend.get('days_to_full') or 0))}"
    if state == "not_filling":
        return f"{rate}, not filling"
    return f"unknown ({trend.get('samples', 0)} samples; needs 3 over 2 sample intervals)"


def history_table(samples: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            str(s.get("sampled_at", "")),
            human_bytes(s.get("used_bytes")),
            human_bytes(s.get("capacity_bytes")),
            human_bytes(s.get("available_bytes")),
            human_bytes(s.get("vm_disk_bytes")),
            human_bytes(s.get("image_cache_bytes")),
        ]
        for s in samples
    ]
    return render_table(["TIME", "USED", "CAPACITY", "AVAILABLE", "VM-DISKS", "CACHE"], rows)

"""Pure pool disk-pressure transition (docs/pool-contract.md §9).

Owns: the pressure configuration and state value types and
``next_pressure``, which folds one scan result into the current state.

Called by: the API's scan worker after each ``storage_pool.scan`` result,
which persists the returned state (exposed as ``disk_pressure``) and logs the
returned transition (WARN "pool disk pressure set", INFO "pool disk pressure
cleared"). The scheduler only reads the persisted state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

__all__ = ["PressureConfig", "PressureState", "PressureTransition", "next_pressure"]


@dataclass(frozen=True, slots=True)
class PressureConfig:
    """``placement.pressure.disk.*``: pressure when available < threshold% of capacity."""

    enabled: bool = True
    threshold_percent: int = 15
    consecutive_required: int = 1


@dataclass(frozen=True, slots=True)
class PressureState:
    """Pressure condition of one pool instance; ``since`` is set while under pressure."""

    since: datetime | None
    consecutive_count: int

    @property
    def under_pressure(self) -> bool:
        return self.since is not None


class PressureTransition(enum.Enum):
    """What a scan did to the pressure condition."""

    NONE = "none"
    COUNTING = "counting"
    SET = "set"
    CLEARED = "cleared"


def next_pressure(
    state: PressureState,
    available: int | None,
    capacity: int | None,
    cfg: PressureConfig,
    now: datetime,
) -> tuple[PressureState, PressureTransition]:
    """Fold one scan result into ``state``.

    Disabled detection, a missing metric or a non-positive capacity carry the
    state forward unchanged. A low scan (``available*100 < threshold*capacity``)
    increments the count and sets ``since = now`` once the count reaches
    ``consecutive_required``; a scan at or above the threshold clears both.
    """
    if not cfg.enabled or available is None or capacity is None or capacity <= 0:
        return state, PressureTransition.NONE

    if available * 100 < cfg.threshold_percent * capacity:
        count = state.consecutive_count + 1
        if state.since is None:
            if count >= cfg.consecutive_required:
                return PressureState(since=now, consecutive_count=count), PressureTransition.SET
            return PressureState(since=None, consecutive_count=count), PressureTransition.COUNTING
        return PressureState(since=state.since, consecutive_count=count), PressureTransition.NONE

    cleared = PressureState(since=None, consecutive_count=0)
    if state.since is not None:
        return cleared, PressureTransition.CLEARED
    return cleared, PressureTransition.NONE

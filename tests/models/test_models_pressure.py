"""Tests for otherix.models.pressure: the six §8.1 pressure_test cases plus edges."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from otherix.models.pressure import (
    PressureConfig,
    PressureState,
    PressureTransition,
    next_pressure,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(minutes=15)
GIB = 2**30
CLEAR = PressureState(since=None, consecutive_count=0)
PRESSURED = PressureState(since=EARLIER, consecutive_count=1)


# --- the six reference cases ---


def test_one_low_scan_sets_pressure():
    state, kind = next_pressure(CLEAR, 10 * GIB, 100 * GIB, PressureConfig(), NOW)
    assert state == PressureState(since=NOW, consecutive_count=1)
    assert kind is PressureTransition.SET


def test_high_scan_while_pressured_clears():
    state, kind = next_pressure(PRESSURED, 50 * GIB, 100 * GIB, PressureConfig(), NOW)
    assert state == CLEAR
    assert kind is PressureTransition.CLEARED


def test_consecutive_three_low_scan_at_count_one_counts():
    cfg = PressureConfig(consecutive_required=3)
    state, kind = next_pressure(
        PressureState(since=None, consecutive_count=1), 1 * GIB, 100 * GIB, cfg, NOW
    )
    assert state == PressureState(since=None, consecutive_count=2)
    assert kind is PressureTransition.COUNTING


def test_detection_disabled_carries_state_forward():
    cfg = PressureConfig(enabled=False)
    for current in (CLEAR, PRESSURED, PressureState(since=None, consecutive_count=2)):
        state, kind = next_pressure(current, 1 * GIB, 100 * GIB, cfg, NOW)
        assert state == current
        assert kind is PressureTransition.NONE


def test_nil_capacity_changes_nothing():
    for current in (CLEAR, PRESSURED):
        state, kind = next_pressure(current, 1 * GIB, None, PressureConfig(), NOW)
        assert state == current
        assert kind is PressureTransition.NONE


def test_high_scan_while_not_pressured_changes_nothing():
    state, kind = next_pressure(CLEAR, 50 * GIB, 100 * GIB, PressureConfig(), NOW)
    assert state == CLEAR
    assert kind is PressureTransition.NONE


# --- edges ---


@pytest.mark.parametrize(("available", "capacity"), [(None, 100), (1, 0), (1, -5), (None, None)])
def test_missing_metrics_or_non_positive_capacity_carry_forward(available, capacity):
    state, kind = next_pressure(PRESSURED, available, capacity, PressureConfig(), NOW)
    assert state == PRESSURED
    assert kind is PressureTransition.NONE


def test_threshold_is_strict_and_uses_exact_integer_math():
    cfg = PressureConfig(threshold_percent=15)
    # Exactly 15% is not pressure.
    state, kind = next_pressure(CLEAR, 15, 100, cfg, NOW)
    assert (state, kind) == (CLEAR, PressureTransition.NONE)
    # One byte under 15% of a huge capacity is pressure (no float rounding).
    capacity = 10**18
    state, kind = next_pressure(CLEAR, capacity * 15 // 100 - 1, capacity, cfg, NOW)
    assert kind is PressureTransition.SET


def test_low_scan_while_pressured_keeps_since_and_counts_up():
    state, kind = next_pressure(PRESSURED, 1, 100, PressureConfig(), NOW)
    assert state == PressureState(since=EARLIER, consecutive_count=2)
    assert kind is PressureTransition.NONE


def test_consecutive_three_sets_on_third_low_scan():
    cfg = PressureConfig(consecutive_required=3)
    state = CLEAR
    kinds = []
    for minute in range(3):
        state, kind = next_pressure(state, 1, 100, cfg, NOW + timedelta(minutes=minute))
        kinds.append(kind)
    assert kinds == [
        PressureTransition.COUNTING,
        PressureTransition.COUNTING,
        PressureTransition.SET,
    ]
    assert state == PressureState(since=NOW + timedelta(minutes=2), consecutive_count=3)


def test_high_scan_resets_partial_count_without_clearing():
    state, kind = next_pressure(
        PressureState(since=None, consecutive_count=2), 90, 100, PressureConfig(), NOW
    )
    assert state == CLEAR
    assert kind is PressureTransition.NONE


def test_types_are_frozen_with_contract_defaults():
    cfg = PressureConfig()
    assert (cfg.enabled, cfg.threshold_percent, cfg.consecutive_required) == (True, 15, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.threshold_percent = 20  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        CLEAR.consecutive_count = 3  # type: ignore[misc]
    assert PRESSURED.under_pressure
    assert not CLEAR.under_pressure

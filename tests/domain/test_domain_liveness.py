"""Tests for otherix.domain.liveness: node status transitions and the projected status."""

from __future__ import annotations

import pytest

from otherix.domain.liveness import (
    STATUSES,
    LivenessLimits,
    after_silence,
    cordon_refusal,
    heartbeat_refused,
    may_mark_gone,
    may_mark_unreachable,
    projected_status,
    promotes_on_heartbeat,
    readmit_refusal,
)

LIMITS = LivenessLimits(stale_threshold=90.0, gone_grace=300.0)


@pytest.mark.parametrize(
    ("status", "cordoned", "deleted", "shown"),
    [
        ("ready", False, False, "ready"),
        ("ready", True, False, "cordoned"),
        ("pending", True, False, "pending"),  # cordoned shows only on a ready node
        ("unreachable", True, False, "unreachable"),
        ("unreachable", False, False, "unreachable"),
        ("gone", False, False, "gone"),
        ("gone", True, False, "gone"),
        ("ready", False, True, "gone"),  # deleted: gone whatever the row says
        ("ready", True, True, "gone"),
        ("pending", False, True, "gone"),
    ],
)
def test_projected_status(status, cordoned, deleted, shown):
    assert projected_status(status, cordoned, deleted) == shown
    assert shown in STATUSES


@pytest.mark.parametrize(
    ("status", "promotes", "refused"),
    [
        ("pending", True, False),
        ("unreachable", True, False),
        ("ready", False, False),
        ("gone", False, True),
    ],
)
def test_heartbeat(status, promotes, refused):
    assert promotes_on_heartbeat(status) is promotes
    assert heartbeat_refused(status) is refused


@pytest.mark.parametrize(
    ("status", "silent_for", "unreachable_for", "to"),
    [
        ("ready", 0.0, 0.0, None),
        ("ready", 90.0, 0.0, None),  # exactly the threshold: still ready
        ("ready", 90.001, 0.0, "unreachable"),
        ("ready", 1000.0, 1000.0, "unreachable"),  # never straight to gone
        ("unreachable", 1000.0, 300.0, None),  # exactly the grace: still unreachable
        ("unreachable", 1000.0, 300.001, "gone"),
        ("unreachable", 0.0, 301.0, "gone"),  # the grace counts from the marking
        ("unreachable", 1000.0, 10.0, None),
        ("pending", 10_000.0, 10_000.0, None),  # a node never heard from is left pending
        ("gone", 10_000.0, 10_000.0, None),
        ("cordoned", 10_000.0, 10_000.0, None),  # projected, never stored
    ],
)
def test_after_silence(status, silent_for, unreachable_for, to):
    assert after_silence(status, silent_for, unreachable_for, LIMITS) == to


@pytest.mark.parametrize(
    ("uptime", "unreachable", "gone"),
    [
        (0.0, False, False),
        (90.0, False, False),
        (90.5, True, False),
        (300.0, True, False),
        (300.5, True, True),
    ],
)
def test_a_fresh_process_marks_nothing_before_the_limits(uptime, unreachable, gone):
    assert may_mark_unreachable(uptime, LIMITS) is unreachable
    assert may_mark_gone(uptime, LIMITS) is gone


@pytest.mark.parametrize(
    ("status", "cordoned", "refusal"),
    [
        ("ready", True, None),
        ("pending", True, None),
        ("unreachable", True, None),
        ("gone", True, "node is gone"),
        ("ready", False, None),
        ("pending", False, "node is pending; only a ready node can be uncordoned"),
        ("unreachable", False, "node is unreachable; only a ready node can be uncordoned"),
        ("gone", False, "node is gone; only a ready node can be uncordoned"),
    ],
)
def test_cordon_refusal(status, cordoned, refusal):
    assert cordon_refusal(status, cordoned) == refusal


@pytest.mark.parametrize(
    ("status", "refusal"),
    [
        ("gone", None),
        ("ready", "only a gone node can be readmitted"),
        ("pending", "only a gone node can be readmitted"),
        ("unreachable", "only a gone node can be readmitted"),
    ],
)
def test_readmit_refusal(status, refusal):
    assert readmit_refusal(status) == refusal

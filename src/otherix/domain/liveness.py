"""Node liveness: the status transitions and the projected status.

A node's liveness status is one of ``pending`` (enrolled, never heard from),
``ready``, ``unreachable`` and ``gone``; cordoning is a separate flag. The
transitions:

- a heartbeat from a ``pending`` or ``unreachable`` node promotes it to
  ``ready`` at once (:func:`promotes_on_heartbeat`); a ``gone`` node's
  heartbeat is refused until an operator readmits it (:func:`heartbeat_refused`);
- a liveness pass moves a ``ready`` node silent for longer than the stale
  threshold to ``unreachable``, and an ``unreachable`` node unreachable for
  longer than the gone grace to ``gone`` (:func:`after_silence`); a process
  (replica) marks nothing before it has been up for the threshold itself
  (:func:`may_mark_unreachable`, :func:`may_mark_gone`), so a restart gives
  every node a full threshold to check in;
- readmitting moves ``gone`` back to ``pending`` (:func:`readmit_refusal`);
  cordoning is refused on a ``gone`` node, uncordoning on a node that is not
  ``ready`` (:func:`cordon_refusal`).

The projected status (:func:`projected_status`, shown in views and used by
placement) is ``gone`` for a deleted node and ``cordoned`` for a ready node
with the flag set. Ages are seconds by a monotonic clock (or the database
server's, in the SQL of the several-replica pass); nothing here reads a clock.

Called by: ``api/services/heartbeat.py`` (promotion, refusal),
``api/workers/liveness.py`` (the pass), ``api/services/nodes.py`` (views,
cordon, readmit) and placement (the projected status of each candidate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "STATUSES",
    "LivenessLimits",
    "NodeStatus",
    "after_silence",
    "cordon_refusal",
    "heartbeat_refused",
    "may_mark_gone",
    "may_mark_unreachable",
    "projected_status",
    "promotes_on_heartbeat",
    "readmit_refusal",
]

#: The stored liveness status of a node.
NodeStatus = Literal["pending", "ready", "unreachable", "gone"]
#: Every status a view shows (``cordoned`` is projected, never stored).
STATUSES: tuple[str, ...] = ("pending", "ready", "cordoned", "unreachable", "gone")


@dataclass(frozen=True, slots=True)
class LivenessLimits:
    """``workers.heartbeat.stale_threshold`` and ``gone_grace``, in seconds."""

    stale_threshold: float
    gone_grace: float


def projected_status(status: str, cordoned: bool, deleted: bool = False) -> str:
    """The status a view shows: ``gone`` once deleted, ``cordoned`` when ready and cordoned."""
    if deleted:
        return "gone"
    if status == "ready" and cordoned:
        return "cordoned"
    return status


def promotes_on_heartbeat(status: str) -> bool:
    """Whether a heartbeat moves the node to ``ready`` (from ``pending`` or ``unreachable``)."""
    return status in ("pending", "unreachable")


def heartbeat_refused(status: str) -> bool:
    """Whether a heartbeat is refused: a ``gone`` node must be readmitted first."""
    return status == "gone"


def after_silence(
    status: str, silent_for: float, unreachable_for: float, limits: LivenessLimits
) -> NodeStatus | None:
    """The status a liveness pass moves a node to, or ``None`` to leave it.

    ``silent_for``: seconds since the node was last heard from;
    ``unreachable_for``: seconds since it was marked unreachable. Both limits
    are exclusive (a node silent for exactly the threshold stays ready).
    """
    if status == "ready" and silent_for > limits.stale_threshold:
        return "unreachable"
    if status == "unreachable" and unreachable_for > limits.gone_grace:
        return "gone"
    return None


def may_mark_unreachable(uptime: float, limits: LivenessLimits) -> bool:
    """Whether a process up for ``uptime`` seconds may mark nodes unreachable at all."""
    return uptime > limits.stale_threshold


def may_mark_gone(uptime: float, limits: LivenessLimits) -> bool:
    """Whether a process up for ``uptime`` seconds may mark nodes gone at all."""
    return uptime > limits.gone_grace


def cordon_refusal(status: str, cordoned: bool) -> str | None:
    """Why setting the cordon flag to ``cordoned`` is refused (409), or ``None``."""
    if cordoned and status == "gone":
        return "node is gone"
    if not cordoned and status != "ready":
        return f"node is {status}; only a ready node can be uncordoned"
    return None


def readmit_refusal(status: str) -> str | None:
    """Why a readmit is refused (409), or ``None``: only a ``gone`` node is readmitted."""
    if status != "gone":
        return "only a gone node can be readmitted"
    return None

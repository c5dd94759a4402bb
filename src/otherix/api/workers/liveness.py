"""Node liveness and the heartbeat write-behind flush.

``liveness_pass`` is the step tests call with a fake clock: flush buffered
heartbeats, mark ``ready`` nodes with no heartbeat for ``stale_threshold`` as
``unreachable``, and ``unreachable`` nodes older than ``gone_grace`` as
``gone``. Promotion to ``ready`` happens in the heartbeat handler itself, on
the first fresh heartbeat (``api/services/heartbeat.py``).

Ages never come from the wall clock, which an operator or NTP can step
(``api/clock.py``):

- **One replica (SQLite)**: ages are measured with the process's monotonic
  clock. ``HeartbeatBuffer`` remembers when each node was last heard from and
  when this process marked it unreachable; a node not heard from since the
  process started counts from the start. So a restarted control plane gives
  every node a full threshold to check in instead of marking the fleet
  unreachable at once. ``last_heartbeat_at`` is still written (wall clock) for
  people to read, but liveness never reads it.
- **Several replicas (PostgreSQL)**: the shared columns are written and
  compared with the database server's clock: the flush stores
  ``now() - age`` (age by this replica's monotonic clock), and the transition
  compares with ``now()``. A replica marks nothing before it has been up for
  the threshold itself, for the same reason as above; replicas already up go
  on marking.
"""

from __future__ import annotations

import logging

from otherix.api.deps import Deps
from otherix.domain import liveness
from otherix.store import StoreError

log = logging.getLogger(__name__)


def flush_heartbeats(deps: Deps) -> int:
    seen = deps.heartbeats.drain()
    if not seen:
        return 0
    try:
        with deps.db.write() as conn:
            if deps.db.backend == "postgresql":
                mono = deps.clock.monotonic()
                deps.db.nodes.record_heartbeats_db_clock(
                    conn, [(n, mono - m) for n, _at, m in seen]
                )
            else:
                deps.db.nodes.record_heartbeats(conn, [(n, at) for n, at, _m in seen])
    except StoreError:
        deps.heartbeats.restore(seen)  # keep them for the next flush
        raise
    return len(seen)


def liveness_pass(deps: Deps) -> dict[str, list[str]]:
    flush_heartbeats(deps)
    if deps.db.backend == "postgresql":
        stale, gone = _shared_pass(deps)
    else:
        stale, gone = _local_pass(deps)
    for name in stale:
        log.warning("node marked unreachable: %s", name)
    for name in gone:
        log.warning("node marked gone: %s", name)
    return {"unreachable": stale, "gone": gone}


def _local_pass(deps: Deps) -> tuple[list[str], list[str]]:
    """One replica: ages by this process's monotonic clock."""
    cfg = deps.settings.workers.heartbeat
    limits = liveness.LivenessLimits(cfg.stale_threshold, cfg.gone_grace)
    hb = deps.heartbeats
    known = hb.known()  # before the read: every one of them has a row unless deleted
    with deps.db.read() as conn:
        rows = deps.db.nodes.live_statuses(conn, ["ready", "unreachable", "pending"])
    mono = deps.clock.monotonic()
    moves = {
        r.id: liveness.after_silence(
            r.status, hb.age(r.id, mono), hb.unreachable_for(r.id, mono), limits
        )
        for r in rows
    }
    stale_ids = [n for n, to in moves.items() if to == "unreachable"]
    gone_ids = [n for n, to in moves.items() if to == "gone"]
    hb.forget(known - {r.id for r in rows})
    if not stale_ids and not gone_ids:
        return [], []  # the common pass: no write transaction at all
    # ``move`` re-checks the status, so a node promoted since the read stays ready;
    # one heard from since the read is left for the next pass.
    now = deps.clock.now()
    with deps.db.write() as conn:
        stale_ids = [
            n
            for n in stale_ids
            if liveness.after_silence("ready", hb.age(n, mono), 0.0, limits) == "unreachable"
        ]
        gone = deps.db.nodes.move(
            conn, gone_ids, from_status="unreachable", to_status="gone", now=now
        )
        stale = deps.db.nodes.move(
            conn, stale_ids, from_status="ready", to_status="unreachable", now=now
        )
    hb.mark_unreachable([r.id for r in stale], mono)
    return [r.name for r in stale], [r.name for r in gone]


def _shared_pass(deps: Deps) -> tuple[list[str], list[str]]:
    """Several replicas: ages by the database server's clock."""
    cfg = deps.settings.workers.heartbeat
    limits = liveness.LivenessLimits(cfg.stale_threshold, cfg.gone_grace)
    uptime = deps.heartbeats.uptime(deps.clock.monotonic())
    if not liveness.may_mark_unreachable(uptime, limits):
        return [], []
    with deps.db.write() as conn:
        gone = []
        if liveness.may_mark_gone(uptime, limits):
            gone = deps.db.nodes.transition_db_clock(
                conn,
                from_status=["unreachable"],
                to_status="gone",
                changed_older_than=cfg.gone_grace,
            )
        stale = deps.db.nodes.transition_db_clock(
            conn,
            from_status=["ready"],
            to_status="unreachable",
            heartbeat_older_than=cfg.stale_threshold,
        )
    return [r.name for r in stale], [r.name for r in gone]

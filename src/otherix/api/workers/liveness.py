"""Node liveness and the heartbeat write-behind flush.

``liveness_pass`` is the pure-ish step tests call with a fake clock: flush
buffered heartbeats, mark ``ready`` nodes with no heartbeat for
``stale_threshold`` as ``unreachable``, and ``unreachable`` nodes older than
``gone_grace`` as ``gone``. Promotion to ``ready`` happens in the heartbeat
handler itself, on the first fresh heartbeat.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from otherix.api.deps import Deps
from otherix.store import StoreError
from otherix.store import nodes as qn

log = logging.getLogger(__name__)


def flush_heartbeats(deps: Deps) -> int:
    seen = deps.heartbeats.drain()
    if not seen:
        return 0
    try:
        with deps.db.write() as conn:
            qn.record_heartbeats(conn, seen)
    except StoreError:
        for node_id, at in seen:  # keep them for the next flush
            deps.heartbeats.record(node_id, at)
        raise
    return len(seen)


def liveness_pass(deps: Deps) -> dict[str, list[str]]:
    flush_heartbeats(deps)
    cfg = deps.settings.workers.heartbeat
    now = deps.clock.now()
    with deps.db.write() as conn:
        stale = qn.transition(
            conn,
            from_status=["ready"],
            to_status="unreachable",
            heartbeat_before=now - timedelta(seconds=cfg.stale_threshold),
            now=now,
        )
        gone = qn.transition(
            conn,
            from_status=["unreachable"],
            to_status="gone",
            changed_before=now - timedelta(seconds=cfg.gone_grace),
            now=now,
        )
    for row in stale:
        log.warning("node marked unreachable: %s", row["name"])
    for row in gone:
        log.warning("node marked gone: %s", row["name"])
    return {"unreachable": [r["name"] for r in stale], "gone": [r["name"] for r in gone]}

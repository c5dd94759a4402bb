"""Agent heartbeat: merge observed state, answer with desired state.

Cost grows with change, not fleet size: an unchanged report costs one read
(the node row) and an in-memory note of the heartbeat time, which a worker
flushes in batches. Writes happen only for what changed: pool reports that
differ from what is stored, new capabilities/resources, a status promotion.

A node that heartbeats while ``pending`` or ``unreachable`` is promoted to
``ready`` at once, and the on-ready hook provisions the default pool.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from otherix.api.deps import AgentIdentity, Deps
from otherix.api.services import defaultpool
from otherix.api.services.nodes import bind_agent
from otherix.errors import Conflict, NotFound
from otherix.models.heartbeat import (
    AgentTask,
    DeclaredPool,
    DesiredState,
    HeartbeatReply,
    HeartbeatReport,
    PoolReport,
)
from otherix.models.pressure import PressureConfig, PressureState, next_pressure
from otherix.store import nodes as qn
from otherix.store import pools as qp
from otherix.store import tasks as qt

log = logging.getLogger(__name__)


def desired_state(deps: Deps, node_id: str) -> DesiredState:
    with deps.db.read() as conn:
        revision = qn.get_revision(conn, node_id)
        if revision is None:
            raise NotFound("node not found")
        declared = qp.declared_for_node(conn, node_id)
        pending = qt.pending_for_node(conn, node_id)
    return DesiredState(
        revision=revision,
        declared_pools=[DeclaredPool.model_validate(d) for d in declared],
        tasks=[AgentTask.model_validate(t) for t in pending],
    )


def pressure_config(deps: Deps) -> PressureConfig:
    d = deps.settings.placement.pressure.disk
    return PressureConfig(d.enabled, d.threshold_percent, d.consecutive_required)


def _pool_changes(
    deps: Deps, stored: dict[str, Any], rep: PoolReport, now: datetime
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if stored["reconciliation_status"] != rep.reconciliation_status:
        values["reconciliation_status"] = rep.reconciliation_status
    if stored["reconciliation_error"] != rep.reconciliation_error:
        values["reconciliation_error"] = rep.reconciliation_error
    if (
        rep.capacity_bytes is not None
        and rep.available_bytes is not None
        and (
            stored["capacity_bytes"] != rep.capacity_bytes
            or stored["available_bytes"] != rep.available_bytes
        )
    ):
        values.update(
            capacity_bytes=rep.capacity_bytes, available_bytes=rep.available_bytes, reported_at=now
        )
        state, _ = next_pressure(
            PressureState(stored["pressure_since"], stored["pressure_count"]),
            rep.available_bytes,
            rep.capacity_bytes,
            pressure_config(deps),
            now,
        )
        if (
            state.since != stored["pressure_since"]
            or state.consecutive_count != stored["pressure_count"]
        ):
            values.update(pressure_since=state.since, pressure_count=state.consecutive_count)
    if rep.images is not None:
        images = [i.model_dump(mode="json") for i in rep.images]
        if images != stored["images"]:
            values["images"] = images
    if values:
        values["last_reconciled_at"] = now
    return values


def apply_pool_reports(
    deps: Deps, conn: Any, node_id: str, reports: list[PoolReport], now: datetime
) -> int:
    """Store what changed; reports for pools the node no longer has are ignored."""
    stored = {r["name_lower"]: r for r in qp.status_for_node(conn, node_id)}
    written = 0
    for rep in reports:
        row = stored.get(rep.name.lower())
        if row is None:
            continue
        values = _pool_changes(deps, row, rep, now)
        if values:
            qp.update_status(conn, row["pool_id"], values)
            written += 1
    return written


def _observed_changes(node: dict[str, Any], report: HeartbeatReport) -> dict[str, Any]:
    observed: dict[str, Any] = {}
    if report.agent_version != node["agent_version"]:
        observed["agent_version"] = report.agent_version
    if report.capabilities is not None and report.capabilities != node["capabilities"]:
        observed["capabilities"] = report.capabilities
    if report.resources is not None:
        res = report.resources.model_dump(exclude_none=True)
        if res != node["resources"]:
            observed["resources"] = res
    return observed


def _node_changes(
    node: dict[str, Any], report: HeartbeatReport, promote: bool, now: datetime
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if report.pools is not None and report.digest != node["observed_digest"]:
        values["observed_digest"] = report.digest
    if node["architecture"] is None:
        values["architecture"] = report.architecture
    if promote:
        values.update(status="ready", status_changed_at=now, updated_at=now, last_heartbeat_at=now)
    return values


def _load_node(deps: Deps, ident: AgentIdentity, report: HeartbeatReport) -> dict[str, Any]:
    with deps.db.read() as conn:
        node = qn.get_node(conn, ident.node_id)
    if node is None:
        raise NotFound("node not found")
    if node["status"] == "gone":
        raise Conflict(
            "node is gone; an operator must readmit it ('otherix node readmit')",
            {"reason": "node_gone"},
        )
    if node["architecture"] and node["architecture"] != report.architecture:
        raise Conflict(
            "architecture mismatch",
            {
                "reason": "architecture_mismatch",
                "registered": node["architecture"],
                "reported": report.architecture,
            },
        )
    return node


def heartbeat(
    deps: Deps, ident: AgentIdentity, name: str, report: HeartbeatReport
) -> HeartbeatReply:
    bind_agent(ident, name)
    now = deps.clock.now()
    node = _load_node(deps, ident, report)
    resync = report.pools is None and report.digest != node["observed_digest"]
    promote = node["status"] in ("pending", "unreachable")
    observed = _observed_changes(node, report)
    node_values = _node_changes(node, report, promote, now)
    if observed or node_values or report.pools:
        with deps.db.write() as conn:
            if report.pools:
                apply_pool_reports(deps, conn, ident.node_id, report.pools, now)
            if observed:
                qn.update_observed(conn, ident.node_id, {**observed, "updated_at": now})
            if node_values:
                qn.update_node(conn, ident.node_id, node_values)
    if promote:
        log.info("node promoted to ready: %s", node["name"])
        defaultpool.ensure_default_pool(deps, ident.node_id, node["name"])
    else:
        deps.heartbeats.record(ident.node_id, now)
    return HeartbeatReply(
        received_at=now,
        resync=resync,
        heartbeat_interval_seconds=deps.settings.agents.heartbeat_interval,
        desired=desired_state(deps, ident.node_id),
    )

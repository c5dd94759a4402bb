"""Agent heartbeat: merge observed state, answer with desired state.

Cost grows with change, not fleet size: an unchanged report costs one read
(the node row) and an in-memory note of the heartbeat time, which a worker
flushes in batches. Writes happen only for what changed: pool reports that
differ from what is stored, new capabilities/resources, a status promotion.

A node that heartbeats while ``pending`` or ``unreachable`` is promoted to
``ready`` at once. The on-ready hook provisions the default pool only at the
node's first promotion (``defaultpool.on_promoted``), never on a return from
unreachable, so a deleted or renamed default pool stays so.

Pool identity: the desired state declares each pool with its id, the
cluster id, its marker id and identity mode, and the made VM disks the agent
must find in it (``disks_to_check``: file known, VM not being deleted; a
disk joins or leaves that set only in transactions that bump the node's
revision: a ``vm.create`` or ``vm.delete`` outcome, a delete request). A
report of a pool ``ready`` with the marker the control plane chose moves a
``create``/``adopt`` pool to ``verify`` and bumps the revision, so the agent
learns that from now on the marker is required. ``missing_disks`` sets or
clears ``vm_disks.missing_since``. A report's ``usage`` (issue 16) replaces the
stored one when it differs; a null one keeps it. So does its ``drift`` (issue 16:
what the pool holds that nobody owns, ``pool_status.drift``, read by ``pool doctor``).

VMs: a report's ``vms`` (every VM the agent's runtime knows, as observed; None
when unchanged) replaces each of the node's VMs' ``vm_runtime`` row that
differs; a VM of this node the agent does not know loses its row (it never ran
there, or its record is gone: it reads as stopped). Ids of VMs that are not on
this node are ignored.

Version skew (issue 17): every heartbeat's ``agent_version`` is checked against
the control plane's own (``domain.versions``: its minor or one older; dev builds
always pass) before anything is read or written for it; outside that, 409
``agent_version_unsupported`` and nothing is stored. Checked every time, not
only when the version changes: after a control-plane upgrade the stored version
of a too-old agent is unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, overload

from otherix import __version__
from otherix.api.clock import Clock
from otherix.api.deps import AgentIdentity, HeartbeatBuffer
from otherix.api.services import secrets
from otherix.api.services.defaultpool import DefaultPoolService
from otherix.api.services.nodes import NodeService, bind_agent
from otherix.api.settings import ApiSettings
from otherix.api.watch import WatchHub
from otherix.domain import liveness, versions
from otherix.domain.pressure import PressureConfig, PressureState, next_pressure
from otherix.errors import AgentVersionUnsupported, Conflict, NotFound
from otherix.models.heartbeat import (
    AgentTask,
    DeclaredDisk,
    DeclaredPool,
    DesiredState,
    HeartbeatReport,
    PoolReport,
    VmObservation,
)
from otherix.store import Database, Tx
from otherix.store.ports import JSONValue
from otherix.store.ports.events import EventStore
from otherix.store.ports.nodes import HeartbeatNode, NodeChange, NodeStore, ObservedChange
from otherix.store.ports.pools import (
    DeclaredPoolRow,
    DiskToCheck,
    PoolStatusChange,
    PoolStatusRow,
    PoolStore,
)
from otherix.store.ports.tasks import TaskStore
from otherix.store.ports.vms import VmRuntimeRow, VmStore

log = logging.getLogger(__name__)


@dataclass(kw_only=True, eq=False)
class HeartbeatService:
    """The heartbeat service, built once by ``api/compose.py`` with the collaborators below."""

    settings: ApiSettings
    db: Database
    clock: Clock
    cluster_id: str
    hub: WatchHub
    heartbeats: HeartbeatBuffer
    desired_cache: dict[str, tuple[int, DesiredState]]
    desired_json_cache: dict[str, tuple[int, bytes]]
    node_store: NodeStore
    pool_store: PoolStore
    task_store: TaskStore
    vm_store: VmStore
    event_store: EventStore
    default_pool_service: DefaultPoolService
    node_service: NodeService
    #: the key transfer secrets are derived from (``secrets.transfer_secret``)
    transfer_key: str = ""

    def desired_json(self, node_id: str, revision: int | None) -> bytes:
        """``desired_state`` serialised once per revision (the hot path's reply body)."""
        state = self.desired_state(node_id, revision)
        cached = self.desired_json_cache.get(node_id)
        if cached is not None and cached[0] == state.revision:
            return cached[1]
        body = state.model_dump_json().encode()
        self.desired_json_cache[node_id] = (state.revision, body)
        return body

    def desired_state(self, node_id: str, revision: int | None = None) -> DesiredState:
        """The node's declared pools and tasks. ``revision`` (when the caller has just
        read it) lets an unchanged state come from the per-revision cache."""
        cached = self.desired_cache.get(node_id)
        if cached is not None and revision is not None and cached[0] == revision:
            return cached[1]
        with self.db.read() as conn:
            revision = self.node_store.get_revision(conn, node_id)
            if revision is None:
                raise NotFound("node not found")
            declared = self.pool_store.declared_for_node(conn, node_id)
            disks = self.pool_store.disks_to_check(conn, node_id)
            pending = self.task_store.pending_for_node(conn, node_id)
        state = DesiredState(
            revision=revision,
            declared_pools=self._declared(declared, disks),
            tasks=[AgentTask(id=t.id, type=t.type, args=self._task_args(t.args)) for t in pending],
        )
        self.desired_cache[node_id] = (revision, state)
        return state

    def _task_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """A task's args as its node gets them: a move across nodes gets the secret of
        its transfer ticket, derived here, never stored (``services.vmmove``)."""
        transfer = args.get("transfer")
        if not isinstance(transfer, dict) or not isinstance(transfer.get("ticket"), str):
            return args
        secret = secrets.transfer_secret(self.transfer_key, transfer["ticket"])
        return {**args, "transfer": {**transfer, "secret": secret}}

    def _declared(
        self, pools: list[DeclaredPoolRow], disks: list[DiskToCheck]
    ) -> list[DeclaredPool]:
        by_pool: dict[str, list[DeclaredDisk]] = {}
        for d in disks:
            disk = DeclaredDisk(
                id=d.id,
                vm_id=d.vm_id,
                file_path=d.file_path,
                image_sha256=d.image_sha256,
                incoming=d.incoming,
            )
            by_pool.setdefault(d.storage_pool_id, []).append(disk)
        return [
            DeclaredPool.model_validate(
                {
                    "id": p.id,
                    "name": p.name,
                    "type": p.type,
                    "path": p.path,
                    "config": p.config,
                    "created_at": p.created_at,
                    "cluster_id": self.cluster_id,
                    "identity": p.identity_mode,
                    "marker_id": p.marker_id or "",
                    "disks": by_pool.get(p.id, []),
                }
            )
            for p in pools
        ]

    def pressure_config(self) -> PressureConfig:
        d = self.settings.placement.pressure.disk
        return PressureConfig(d.enabled, d.threshold_percent, d.consecutive_required)

    def _pool_changes(
        self, stored: PoolStatusRow, rep: PoolReport, now: datetime
    ) -> PoolStatusChange:
        values: PoolStatusChange = {}
        if stored.reconciliation_status != rep.reconciliation_status:
            values["reconciliation_status"] = rep.reconciliation_status
        if stored.reconciliation_error != rep.reconciliation_error:
            values["reconciliation_error"] = rep.reconciliation_error
        if stored.reconciliation_reason != rep.reconciliation_reason:
            values["reconciliation_reason"] = rep.reconciliation_reason
        if (
            rep.capacity_bytes is not None
            and rep.available_bytes is not None
            and (
                stored.capacity_bytes != rep.capacity_bytes
                or stored.available_bytes != rep.available_bytes
            )
        ):
            values["capacity_bytes"] = rep.capacity_bytes
            values["available_bytes"] = rep.available_bytes
            values["reported_at"] = now
            state, _ = next_pressure(
                PressureState(stored.pressure_since, stored.pressure_count),
                rep.available_bytes,
                rep.capacity_bytes,
                self.pressure_config(),
                now,
            )
            if (
                state.since != stored.pressure_since
                or state.consecutive_count != stored.pressure_count
            ):
                values["pressure_since"] = state.since
                values["pressure_count"] = state.consecutive_count
        if rep.images is not None:
            images: list[JSONValue] = [i.model_dump(mode="json") for i in rep.images]
            if images != stored.images:
                values["images"] = images
        if rep.usage is not None:
            usage: dict[str, JSONValue] = dict(rep.usage.model_dump())
            if usage != stored.usage:
                values["usage"] = usage
        if rep.scrub is not None:
            scrub: dict[str, JSONValue] = rep.scrub.model_dump(mode="json")
            if scrub != stored.scrub:
                values["scrub"] = scrub
        # drift (issue 16): the agent's last scan replaces the stored one; null keeps it
        if rep.drift is not None:
            drift: dict[str, JSONValue] = rep.drift.model_dump(mode="json")
            if drift != stored.drift:
                values["drift"] = drift
        if values:
            values["last_reconciled_at"] = now
        return values

    def _apply_missing(
        self, conn: Tx, pool_id: str, reported: set[str], recorded: set[str], now: datetime
    ) -> None:
        self.pool_store.mark_disks_missing(conn, pool_id, reported - recorded, now)
        self.pool_store.mark_disks_missing(conn, pool_id, recorded - reported, None)

    def apply_pool_reports(
        self, conn: Tx, node_id: str, reports: list[PoolReport], now: datetime
    ) -> bool:
        """Store what changed; reports for pools the node no longer has are ignored.

        Returns True when a pool's identity got recorded: the revision was bumped
        (the node's declared pools changed) and the caller must wake its watchers.
        """
        stored = {r.name_lower: r for r in self.pool_store.status_for_node(conn, node_id)}
        recorded_missing = (
            self.pool_store.missing_disk_ids(conn, node_id)
            if any(r.missing_disks is not None for r in reports)
            else {}
        )
        bump = False
        for rep in reports:
            row = stored.get(rep.name.lower())
            if row is None:
                continue
            values = self._pool_changes(row, rep, now)
            if _identity_recorded(row, rep):
                values["identity_mode"] = "verify"
                bump = True
                log.info("pool identity recorded: %s (marker %s)", rep.name, rep.marker_id)
            if values:
                self.pool_store.update_status(conn, row.pool_id, values)
            if rep.missing_disks is not None:
                recorded = recorded_missing.get(row.pool_id, set())
                self._apply_missing(conn, row.pool_id, set(rep.missing_disks), recorded, now)
            if rep.evictions:
                self._record_evictions(conn, node_id, row.pool_id, rep, now)
            if rep.scrub is not None and rep.scrub.quarantined:
                self._record_quarantines(conn, node_id, row, rep, now)
        if bump:
            self.node_store.bump_revision(conn, node_id)
        return bump

    def _record_evictions(
        self, conn: Tx, node_id: str, pool_id: str, rep: PoolReport, now: datetime
    ) -> None:
        """Each cache eviction the agent reports becomes one ``image_evicted`` node event
        (the agent repeats its recent ones in every full report: those already logged
        are skipped)."""
        seen = {
            (e.details.get("pool_id"), e.details.get("image"), e.details.get("evicted_at"))
            for e in self.event_store.list_events(conn, node_id)
            if e.reason == "image_evicted"
        }
        why = {
            "max_bytes": "the cache is over its cache.max_bytes",
            "min_free": "the pool's free space is under cache.min_free_percent",
            "prune": "otherix pool cache prune",
        }
        for ev in rep.evictions or []:
            stamp = ev.evicted_at.isoformat().replace("+00:00", "Z")
            if (pool_id, ev.image, stamp) in seen:
                continue
            self.event_store.add_event(
                conn,
                node_id,
                type_="normal",
                reason="image_evicted",
                message=f'image {ev.image} evicted from the cache of pool "{rep.name}": '
                f"{why[ev.reason]}",
                details={
                    "pool": rep.name,
                    "pool_id": pool_id,
                    "image": ev.image,
                    "sha256": ev.sha256,
                    "size_bytes": ev.size_bytes,
                    "reason": ev.reason,
                    "last_used_at": ev.last_used_at.isoformat().replace("+00:00", "Z"),
                    "evicted_at": stamp,
                },
                now=now,
            )
            seen.add((pool_id, ev.image, stamp))

    def _record_quarantines(
        self, conn: Tx, node_id: str, stored: PoolStatusRow, rep: PoolReport, now: datetime
    ) -> None:
        """Each quarantined cache entry the agent reports becomes one ``image_quarantined``
        node event (a warning), once: the agent reports what ``quarantine/`` holds on every
        pass, so an entry already in the stored report, or already logged, is skipped."""
        assert rep.scrub is not None
        before = stored.scrub.get("quarantined") if stored.scrub else None
        known = (
            {q.get("path") for q in before if isinstance(q, dict)}
            if isinstance(before, list)
            else set()
        )
        fresh = [q for q in rep.scrub.quarantined if q.path not in known]
        if not fresh:
            return
        seen = {
            (e.details.get("pool_id"), e.details.get("path"))
            for e in self.event_store.list_events(conn, node_id)
            if e.reason == "image_quarantined"
        }
        for q in fresh:
            if (stored.pool_id, q.path) in seen:
                continue
            found = (
                f"its bytes hash to {q.sha256_found}"
                if q.sha256_found
                else ("the move was cut short")
            )
            self.event_store.add_event(
                conn,
                node_id,
                type_="warning",
                reason="image_quarantined",
                message=f'image {q.image} in the cache of pool "{rep.name}" does not match its '
                f"sha256 {q.sha256_expected or '(unknown)'} ({found}): moved to {q.path}; the "
                "next use downloads it again",
                details={
                    "pool": rep.name,
                    "pool_id": stored.pool_id,
                    "image": q.image,
                    "sha256_expected": q.sha256_expected,
                    "sha256_found": q.sha256_found,
                    "quarantined_at": q.quarantined_at.isoformat().replace("+00:00", "Z"),
                    "path": q.path,
                },
                now=now,
            )
            seen.add((stored.pool_id, q.path))

    def _observed_changes(self, node: HeartbeatNode, report: HeartbeatReport) -> ObservedChange:
        """Agents send capabilities/resources only when they change, so the stored
        JSON is read only then."""
        observed: ObservedChange = {}
        if report.agent_version != node.agent_version:
            observed["agent_version"] = report.agent_version
        if report.capabilities is None and report.resources is None:
            return observed
        with self.db.read() as conn:
            stored = self.node_store.get_observed(conn, node.id)
        if report.capabilities is not None and report.capabilities != stored.capabilities:
            observed["capabilities"] = report.capabilities
        if report.resources is not None:
            res = report.resources.model_dump(exclude_none=True)
            if res != stored.resources:
                observed["resources"] = res
        return observed

    def _load_node(self, token: str, report: HeartbeatReport) -> HeartbeatNode:
        node = None
        if token.startswith(secrets.NODE_CREDENTIAL_PREFIX):
            with self.db.read_one() as conn:
                node = self.node_store.get_node_for_heartbeat(conn, secrets.digest(token))
        if node is None:
            raise self.node_service.unknown_credential(token)  # node_deleted or credential_unknown
        if liveness.heartbeat_refused(node.status):
            raise Conflict(
                "node is gone; an operator must readmit it ('otherix node readmit')",
                {"reason": "node_gone"},
            )
        problem = versions.skew_problem(__version__, report.agent_version)
        if problem is not None:
            server = versions.release(__version__)
            assert server is not None  # a problem needs two release versions
            oldest, newest = versions.accepted_range(server)
            raise AgentVersionUnsupported(
                problem,
                {
                    "agent_version": report.agent_version,
                    "server_version": __version__,
                    "accepted": {"oldest": str(oldest), "newest": str(newest)},
                },
            )
        if node.architecture and node.architecture != report.architecture:
            raise Conflict(
                "architecture mismatch",
                {
                    "reason": "architecture_mismatch",
                    "registered": node.architecture,
                    "reported": report.architecture,
                },
            )
        return node

    @overload
    def heartbeat(
        self, token: str, name: str, report: HeartbeatReport, *, read_only: Literal[False] = ...
    ) -> HeartbeatAnswer: ...

    @overload
    def heartbeat(
        self, token: str, name: str, report: HeartbeatReport, *, read_only: bool
    ) -> HeartbeatAnswer | None: ...

    def heartbeat(
        self, token: str, name: str, report: HeartbeatReport, *, read_only: bool = False
    ) -> HeartbeatAnswer | None:
        """Handle one heartbeat; returns what to answer.

        With ``read_only`` the call returns None before touching anything when the
        report carries a change; the route then runs it again in a worker thread.
        The common case, an unchanged node, never writes (its time is buffered and
        flushed in batches), so on SQLite it can be answered on the event loop
        without a thread handoff.
        """
        now = self.clock.now()
        node = self._load_node(token, report)
        bind_agent(AgentIdentity(node.id, node.name), name)
        ident = AgentIdentity(node.id, node.name)
        resync = report.pools is None and report.digest != node.observed_digest
        promote = liveness.promotes_on_heartbeat(node.status)
        if read_only and (
            promote
            or report.pools
            or report.capabilities is not None
            or report.resources is not None
            or report.agent_version != node.agent_version
            or (report.pools is not None and report.digest != node.observed_digest)
            or report.vms is not None
        ):
            return None
        # Liveness ages are monotonic (api/workers/liveness.py); noted before any
        # write, so a liveness pass never sees a promoted node without it.
        self.heartbeats.record(ident.node_id, now, self.clock.monotonic())
        observed = self._observed_changes(node, report)
        node_values = _node_changes(node, report, promote, now)
        written = bool(observed or node_values or report.pools)
        identity_recorded = False
        if written or report.vms is not None:
            with self.db.write() as conn:
                if report.vms is not None:
                    self.apply_vm_reports(conn, ident.node_id, report.vms, now)
                if report.pools:
                    identity_recorded = self.apply_pool_reports(
                        conn, ident.node_id, report.pools, now
                    )
                if observed:
                    self.node_store.update_observed(
                        conn, ident.node_id, {**observed, "updated_at": now}
                    )
                if node_values:
                    self.node_store.update_node(conn, ident.node_id, node_values)
        if promote:
            log.info("node promoted to ready: %s", node.name)
            written = self.default_pool_service.on_promoted(ident.node_id, node.name) or written
        if identity_recorded:
            self.hub.publish([ident.node_id])
        desired = self.desired_json(ident.node_id, None if written else node.desired_revision)
        return HeartbeatAnswer(now, resync, self.settings.agents.heartbeat_interval, desired)

    def apply_vm_reports(
        self, conn: Tx, node_id: str, reports: list[VmObservation], now: datetime
    ) -> None:
        """Store what the node observes of its VMs (module docstring)."""
        mine = self.vm_store.vm_ids_on_node(conn, node_id)
        stored = self.vm_store.runtimes_on_node(conn, node_id)
        seen: set[str] = set()
        for rep in reports:
            vm_id = rep.id.lower()
            if vm_id not in mine or vm_id in seen:
                continue
            seen.add(vm_id)
            observed = rep.model_dump(mode="json", exclude={"id"})
            old = stored.get(vm_id)
            if old is None or old.observed != observed:
                self.vm_store.put_runtime(conn, VmRuntimeRow(vm_id, rep.state, observed, now))
        self.vm_store.delete_runtimes(conn, set(stored) - seen)

    def current_revision(self, node_id: str) -> int | None:
        with self.db.read() as conn:
            return self.node_store.get_revision(conn, node_id)


def _identity_recorded(stored: PoolStatusRow, rep: PoolReport) -> bool:
    """The agent reports the pool ready with the marker the control plane chose."""
    return (
        stored.identity_mode != "verify"
        and rep.reconciliation_status == "ready"
        and rep.marker_id is not None
        and rep.marker_id == stored.marker_id
    )


def _node_changes(
    node: HeartbeatNode, report: HeartbeatReport, promote: bool, now: datetime
) -> NodeChange:
    values: NodeChange = {}
    if report.pools is not None and report.digest != node.observed_digest:
        values["observed_digest"] = report.digest
    if node.architecture is None:
        values["architecture"] = report.architecture
    if promote:
        values.update(
            {
                "status": "ready",
                "status_changed_at": now,
                "updated_at": now,
                "last_heartbeat_at": now,
            }
        )
    return values


@dataclass(frozen=True)
class HeartbeatAnswer:
    """What a heartbeat answers; ``views.heartbeat.heartbeat_reply`` renders it."""

    received_at: datetime
    resync: bool
    heartbeat_interval: float
    #: the desired state's JSON, serialised once per revision (``desired_json``)
    desired_json: bytes

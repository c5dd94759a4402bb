"""Storage pool rules: validation order, allowlist, per-node uniqueness, one
directory per pool, delete gating by VM disks and by the cluster default, and
the flat and concept views (with their conditions).

The create validation order is the one of docs/pool-contract.md §4.2: forbidden
agent-reported keys, decode, node required, name/type/path/config syntax, the
allowlist (strictly below a prefix: issue 12), then the node lookup, then, in
the insert's transaction with the node's row locked, the name and the path
rules (``domain.overlap``): a path equal to, inside or containing another
pool's path on the node is ``409 conflict`` reason ``pool_path_overlap``.
Creates on one node are serialised by that lock (PostgreSQL ``FOR UPDATE``;
SQLite's ``BEGIN IMMEDIATE``), so of N concurrent overlapping creates at most
one wins; the unique constraint backs the name rule up.

Views: every pool carries ``conditions``: ``path_overlap`` for rows that
overlap from before the rule (computed on read for the page's nodes in one
query), ``orphaned`` for a pool whose node was deleted while it held disks
(its capacity is not shown: no agent measures it). ``usage`` is the capacity in
parts (issue 16, ``domain.usage``): per instance, and on the name view summed
with ``capacity_bytes``/``available_bytes`` over the instances that have them.

A dry run (``create(..., dry_run=True)``, ``POST /v1/storage-pools?dry_run=true``)
is the same create up to and including the insert, in a transaction that is
then rolled back (``Database.rehearse``): every check, the store's own
constraints and the path rule included, decides as for a real create, and
nothing is kept (no row, no revision bump, no watch wake-up).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from otherix.api.clock import Clock
from otherix.api.services.capacitytrend import CapacityTrends, trend_view
from otherix.api.services.defaultpool import DefaultPoolService
from otherix.api.services.nodes import (
    NodeService,
    name_param,
    node_not_found,
)
from otherix.api.settings import ApiSettings
from otherix.api.watch import WatchHub
from otherix.domain.cache import CacheConfigError, parse_cache_config
from otherix.domain.capacity import Trend
from otherix.domain.defaultpool import last_default_message, removes_last_default
from otherix.domain.liveness import projected_status
from otherix.domain.names import looks_like_uuid, validate_pool_name, validate_pool_type
from otherix.domain.overlap import (
    PoolPath,
    condition_message,
    first_overlap,
    overlaps_by_pool,
    refusal_message,
)
from otherix.domain.paths import path_allowed, pool_path_allowed, validate_pool_path
from otherix.domain.placement import effective_bytes
from otherix.domain.scrub import parse_scrub_config
from otherix.domain.usage import Parts, UsageView, sum_views
from otherix.domain.usage import view as usage_view
from otherix.errors import (
    Conflict,
    NotFound,
    PathNotAllowed,
    PoolNameAmbiguous,
    ValidationFailed,
    not_found_message,
)
from otherix.models.pagination import decode_cursor, split_page
from otherix.models.pools import (
    AGENT_REPORTED_FIELDS,
    IMMUTABLE_FIELDS,
    PoolConceptView,
    PoolCreate,
    PoolUpdate,
    PoolUsage,
    StoragePool,
    VmDiskCounts,
)
from otherix.store import Database, ForeignKeyViolation, Tx, UniqueViolation
from otherix.store.ports import JSONObject
from otherix.store.ports.nodes import NodeRow, NodeStore
from otherix.store.ports.pools import NewPool, PoolChange, PoolRef, PoolRow, PoolStore

DUPLICATE = "another storage pool with this name already exists on the target node"


def pool_not_found(ref: str) -> str:
    return not_found_message("pool", ref, "otherix pool list")


IN_USE = "storage pool is in use by virtual machine disks; remove or migrate them first"
PREFIX_ITSELF = (
    "path is an allowed path prefix itself; a pool lives below a prefix "
    "(a pool at the prefix would contain every other pool there)"
)
ORPHANED = (
    "the node of this pool was deleted while the pool held VM disks; no agent reconciles "
    "or measures it: delete its VMs ('otherix vm delete'), then the pool by its UUID"
)


def _usage(row: PoolRow) -> UsageView | None:
    """The instance's capacity in parts (``domain.usage``), None until measured."""
    parts = Parts.from_mapping(row.usage)
    return usage_view(parts, row.capacity_bytes, row.available_bytes)


def _sum_known(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def pool_path(row: PoolRef) -> PoolPath:
    return PoolPath(row.id, row.name, row.path)


@dataclass(kw_only=True, eq=False)
class PoolService:
    """The pools service, built once by ``api/compose.py`` with the collaborators below."""

    settings: ApiSettings
    db: Database
    clock: Clock
    hub: WatchHub
    node_store: NodeStore
    pool_store: PoolStore
    default_pool_service: DefaultPoolService
    node_service: NodeService
    #: time to full (issue 16.6): the trend on every view, and ``pool_filling``
    capacity_trends: CapacityTrends | None = None

    def trends_for(self, conn: Tx, rows: list[PoolRow]) -> dict[str, Trend]:
        """The capacity trend of each row (one query; empty without ``capacity_trends``)."""
        return {} if self.capacity_trends is None else self.capacity_trends.trends_for(conn, rows)

    def conditions_for(self, conn: Tx, rows: list[PoolRow]) -> dict[str, list[dict[str, Any]]]:
        """``path_overlap`` conditions for ``rows``: one narrow query for all their nodes."""
        wanted = {r.id for r in rows}
        on_nodes = self.pool_store.paths_on_nodes(conn, [r.node_id for r in rows])
        by_node: dict[str, list[PoolPath]] = {}
        for r in on_nodes:
            by_node.setdefault(r.node_id, []).append(pool_path(r))
        out: dict[str, list[dict[str, Any]]] = {}
        for paths in by_node.values():
            for pool_id, hits in overlaps_by_pool(paths).items():
                if pool_id in wanted:
                    out[pool_id] = [
                        {
                            "type": "path_overlap",
                            "message": condition_message(hit),
                            "other_pool": {
                                "id": hit.other.id,
                                "name": hit.other.name,
                                "path": hit.other.path,
                            },
                        }
                        for hit in hits
                    ]
        return out

    def pool_view(
        self,
        row: PoolRow,
        default_name: str | None,
        with_images: bool,
        conditions: dict[str, list[dict[str, Any]]] | None = None,
        trends: dict[str, Trend] | None = None,
    ) -> StoragePool:
        orphaned = row.node_deleted_at is not None
        available = row.available_bytes
        effective = effective_bytes(available, row.committed_gib)
        pressure = None
        if row.pressure_since is not None:
            pressure = {"since": row.pressure_since, "consecutive_count": row.pressure_count}
        found = list((conditions or {}).get(row.id, []))
        stale: dict[str, Any] = {}
        if orphaned:  # nothing measures it any more: no capacity, no stale "ready"
            found.append({"type": "orphaned", "message": ORPHANED})
            stale = {
                "capacity_bytes": None,
                "available_bytes": None,
                "reported_at": None,
                "reconciliation_status": "failed",
                "reconciliation_error": ORPHANED,
            }
            effective, pressure = None, None
        usage = None if orphaned else _usage(row)
        # -- time to full (issue 16.6) --
        capacity_trend = None
        if not orphaned and self.capacity_trends is not None:  # no samples: unknown
            capacity_trend = (trends or {}).get(row.id, Trend("unknown", 0))
        if self.capacity_trends is not None and (
            filling := self.capacity_trends.condition(capacity_trend)
        ):
            found.append(filling)
        return StoragePool.model_validate(
            {
                "id": row.id,
                "name": row.name,
                "type": row.type,
                "path": row.path,
                "config": row.config,
                "cordoned": row.cordoned,
                "capacity_bytes": row.capacity_bytes,
                "available_bytes": row.available_bytes,
                "reported_at": row.reported_at,
                "reconciliation_status": row.reconciliation_status,
                "last_reconciled_at": row.last_reconciled_at,
                "reconciliation_error": row.reconciliation_error,
                "created_at": row.created_at,
                "updated_at": row.updated_at,
                **stale,
                "conditions": found,
                "node": "" if orphaned else row.node_name,
                "node_status": None
                if orphaned
                else projected_status(row.node_liveness, row.node_cordoned),
                "available_bytes_effective": effective,
                "is_cluster_default": default_name is not None
                and row.name_lower == default_name.lower(),
                "disk_pressure": pressure,
                "images": row.images if with_images else [],
                "reconciliation_reason": row.reconciliation_reason
                if row.reconciliation_status == "failed"
                else None,
                "vm_disks": {
                    "total": row.vm_disks_total,
                    "missing": row.vm_disks_missing,
                },
                "usage": None if usage is None else usage.to_dict(),
                "scrub": None if orphaned else row.scrub,
                "capacity_trend": None if capacity_trend is None else trend_view(capacity_trend),
            }
        )

    def _resolve_rows(self, ref: str) -> list[PoolRow]:
        with self.db.read() as conn:
            if looks_like_uuid(ref):
                row = self.pool_store.get_pool(conn, ref.lower())
                return [row] if row else []
            return self.pool_store.get_pools_by_name(conn, ref)

    def resolve_one(self, ref: str) -> PoolRow:
        """A UUID, or a name that maps to exactly one instance (else 404 / ambiguous)."""
        rows = self._resolve_rows(ref)
        if not rows:
            raise NotFound(pool_not_found(ref))
        if len(rows) > 1:
            raise PoolNameAmbiguous(
                f"pool name {ref!r} maps to {len(rows)} instances; use the instance UUID",
                {"name": ref, "instances": [{"id": r.id, "node": r.node_name} for r in rows]},
            )
        return rows[0]

    def gauge_samples(self) -> list[tuple[str, str, dict[str, float]]]:
        """(pool, node, gauges) per instance on a live node, for ``/metrics`` (one query)."""
        with self.db.read() as conn:
            rows = self.pool_store.gauges(conn)
        out: list[tuple[str, str, dict[str, float]]] = []
        for r in rows:
            values: dict[str, float] = {"pressure": 1.0 if r.under_pressure else 0.0}
            if r.capacity_bytes is not None:
                values["capacity_bytes"] = float(r.capacity_bytes)
            if r.available_bytes is not None:
                values["available_bytes"] = float(r.available_bytes)
            parts = Parts.from_mapping(r.usage)
            if parts is not None:
                values["vm_disk_bytes"] = float(parts.vm_disk_bytes)
                values["provisioned_bytes"] = float(parts.vm_provisioned_bytes)
                values["cache_bytes"] = float(parts.image_cache_bytes)
                values["scratch_bytes"] = float(parts.scratch_bytes)
            out.append((r.pool_name, r.node_name, values))
        return out

    def get(self, ref: str) -> StoragePool | PoolConceptView:
        rows = self._resolve_rows(ref)
        if not rows:
            raise NotFound(pool_not_found(ref))
        with self.db.read() as conn:
            default_name = self.default_pool_service.current_name(conn)
            conditions = self.conditions_for(conn, rows)
            trends = self.trends_for(conn, rows)
        if looks_like_uuid(ref):
            return self.pool_view(rows[0], default_name, True, conditions, trends)
        instances = [self.pool_view(r, default_name, True, conditions, trends) for r in rows]
        summed = sum_views(_usage(r) for r in rows if r.node_deleted_at is None)
        return PoolConceptView(
            name=rows[0].name,
            type=rows[0].type,
            is_cluster_default=instances[0].is_cluster_default,
            vm_disks=VmDiskCounts(
                total=sum(i.vm_disks.total for i in instances),
                missing=sum(i.vm_disks.missing for i in instances),
            ),
            capacity_bytes=_sum_known(i.capacity_bytes for i in instances),
            available_bytes=_sum_known(i.available_bytes for i in instances),
            usage=None if summed is None else PoolUsage.model_validate(summed.to_dict()),
            instances=instances,
        )

    def list_pools(
        self, *, limit: int, cursor: str | None, node: str | None, pool_type: str | None
    ) -> tuple[list[StoragePool], str | None]:
        after = decode_cursor(cursor) if cursor else None
        if pool_type is not None and (problem := validate_pool_type(pool_type)):
            raise _bad(problem, "type")
        with self.db.read() as conn:
            node_id = self.node_service.node_filter_id(conn, node)
            rows = self.pool_store.list_pools(
                conn, after=after, limit=limit + 1, node_id=node_id, pool_type=pool_type
            )
            default_name = self.default_pool_service.current_name(conn)
            page, nxt = split_page(rows, limit)
            conditions = self.conditions_for(conn, page)
            trends = self.trends_for(conn, page)
        return [self.pool_view(r, default_name, False, conditions, trends) for r in page], nxt

    def create(self, body: PoolCreate, *, dry_run: bool = False) -> StoragePool:
        """Create one pool instance from a parsed body (:func:`parse_create`);
        ``dry_run`` decides the same and writes nothing."""
        prefixes = self.settings.storage_pools.allowed_path_prefixes
        if not pool_path_allowed(body.path, prefixes):
            details = {"allowed_prefixes": list(prefixes), "path": body.path}
            if path_allowed(body.path, prefixes):  # the prefix directory itself
                raise PathNotAllowed(PREFIX_ITSELF, details)
            raise PathNotAllowed(details=details)
        name_param(body.node, "node")
        now = self.clock.now()
        pool_id = str(uuid.uuid4())
        try:
            with self.db.rehearse() if dry_run else self.db.write() as conn:
                node = self.node_store.get_node_by_name(conn, body.node)
                if node is None or not self.node_store.lock_node(conn, node.id):
                    raise NotFound(node_not_found(body.node), {"node": body.node})
                self.check_node_paths(conn, node, body.name, body.path)
                self.pool_store.insert_pool(
                    conn,
                    NewPool(
                        id=pool_id,
                        node_id=node.id,
                        name=body.name,
                        type=body.type,
                        path=body.path,
                        config=body.config,
                        created_at=now,
                    ),
                )
                self.node_store.bump_revision(conn, node.id)
                row = self.pool_store.get_pool(conn, pool_id)
                default_name = self.default_pool_service.current_name(conn)
        except UniqueViolation as exc:
            raise Conflict(DUPLICATE, {"field": "name"}) from exc
        assert row is not None
        if not dry_run:  # a rehearsal kept nothing: no node has anything new to see
            self.hub.publish([row.node_id])
        return self.pool_view(row, default_name, with_images=False)

    def check_node_paths(self, conn: Tx, node: NodeRow, name: str, path: str) -> None:
        """The name and path rules against the node's pools; call with the node locked.

        A name already on the node keeps its old answer (``field: name``), so a
        repeated create reads as before; then the one-directory-one-pool rule.
        """
        existing = [pool_path(r) for r in self.pool_store.paths_on_nodes(conn, [node.id])]
        if any(p.name.lower() == name.lower() for p in existing):
            raise Conflict(DUPLICATE, {"field": "name"})
        hit = first_overlap(path, existing)
        if hit is not None:
            raise Conflict(
                refusal_message(path, hit, node.name),
                {
                    "reason": "pool_path_overlap",
                    "path": path,
                    "relation": hit.relation,
                    "other_pool": {
                        "id": hit.other.id,
                        "name": hit.other.name,
                        "path": hit.other.path,
                    },
                },
            )

    def update(self, ref: str, patch: PoolPatch) -> StoragePool:
        """Apply a checked update body (:func:`parse_update`) to one instance."""
        target = self.resolve_one(ref)
        values: PoolChange = {}
        if patch.name is not None:
            values["name"] = patch.name
            values["name_lower"] = patch.name.lower()
        if patch.config is not None:
            values["config"] = patch.config
        try:
            with self.db.write() as conn:
                if values:
                    values["updated_at"] = self.clock.now()
                    if not self.pool_store.update_pool(conn, target.id, values):
                        raise NotFound(pool_not_found(ref))
                    self.node_store.bump_revision(conn, target.node_id)
                row = self.pool_store.get_pool(conn, target.id)
                default_name = self.default_pool_service.current_name(conn)
                conditions = self.conditions_for(conn, [row]) if row is not None else {}
                trends = self.trends_for(conn, [row]) if row is not None else {}
        except UniqueViolation as exc:
            raise Conflict(DUPLICATE, {"field": "name"}) from exc
        assert row is not None
        if values:
            self.hub.publish([row.node_id])
        return self.pool_view(row, default_name, False, conditions, trends)

    def set_cordon(self, ref: str, cordoned: bool) -> StoragePool:
        """Cordon (or uncordon) one instance: placement skips a cordoned one. The VMs
        already on it stay; nothing reaches its agent (the flag is the control plane's)."""
        target = self.resolve_one(ref)
        with self.db.write() as conn:
            if target.cordoned != cordoned:
                change: PoolChange = {"cordoned": cordoned, "updated_at": self.clock.now()}
                if not self.pool_store.update_pool(conn, target.id, change):
                    raise NotFound(pool_not_found(ref))
            row = self.pool_store.get_pool(conn, target.id)
            default_name = self.default_pool_service.current_name(conn)
            conditions = self.conditions_for(conn, [row]) if row is not None else {}
            trends = self.trends_for(conn, [row]) if row is not None else {}
        if row is None:
            raise NotFound(pool_not_found(ref))
        return self.pool_view(row, default_name, False, conditions, trends)

    def delete(self, ref: str) -> None:
        """Refused while VM disks reference the pool, and when it is the last instance
        of the cluster default pool (``default_pool_in_use``: a VM created without a
        pool would name a pool that no longer exists). The checks and the delete are
        one transaction holding every instance of the name (locked in id order, so
        two deletes never deadlock; ``set-default-pool`` takes the same locks); the
        disks' foreign key backs the disk rule up."""
        target = self.resolve_one(ref)
        try:
            with self.db.write() as conn:
                locked = self.pool_store.lock_instances(conn, target.name, also_id=target.id)
                mine = next((r for r in locked if r.id == target.id), None)
                if mine is None:
                    raise NotFound(pool_not_found(ref))
                if mine.name_lower != target.name_lower:
                    raise Conflict("the storage pool was renamed meanwhile; retry the delete")
                disks = self.pool_store.count_disks(conn, target.id)
                if disks:
                    raise Conflict(IN_USE, {"blocking_resources": {"vm_disks": disks}})
                default_name = self.default_pool_service.current_name(conn)
                same_name = [r for r in locked if r.name_lower == target.name_lower]
                others = [r.name_lower for r in same_name if r.id != target.id]
                if default_name is not None and removes_last_default(
                    default_name, [target.name_lower], others
                ):
                    raise Conflict(
                        last_default_message(default_name),
                        {"reason": "default_pool_in_use", "name": default_name},
                    )
                self.pool_store.delete_pool(conn, target.id)
                self.node_store.bump_revision(conn, target.node_id)
        except ForeignKeyViolation as exc:  # a disk landed between count and delete
            raise Conflict(IN_USE, {"blocking_resources": {"vm_disks": 1}}) from exc
        self.hub.publish([target.node_id])


def _bad(message: str, field: str) -> ValidationFailed:
    return ValidationFailed(message, {"field": field})


def _check_config(value: object) -> None:
    if not isinstance(value, dict):
        raise _bad("config must be a JSON object", "config")
    try:  # the keys the agent acts on (config.cache, config.scrub: domain) must be right
        parse_cache_config(value)
        parse_scrub_config(value)
    except CacheConfigError as exc:
        raise _bad(f"{exc.field}: {exc.message}", exc.field) from None


def _decode(model: type[PoolCreate] | type[PoolUpdate], raw: dict[str, Any]) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        if field == "config":
            raise _bad("config must be a JSON object", "config") from exc
        if first["type"] == "extra_forbidden":
            raise _bad(f"unknown field {field!r}", field) from exc
        if first["type"] == "missing":
            raise _bad(f"{field} is required", field) from exc
        raise _bad(f"invalid request body: {field}: {first['msg']}", field) from exc


@dataclass(frozen=True, slots=True)
class PoolPatch:
    """A checked update body: the new name and config (``None``: left as it is)."""

    name: str | None
    config: JSONObject | None


def parse_update(raw: object) -> PoolPatch:
    """The update body, checked before the pool is looked up (no I/O), in the order
    a create checks its fields: fields that cannot change refused, then the
    fields' syntax, ``name`` then ``config``."""
    if not isinstance(raw, dict):
        raise ValidationFailed("invalid request body: expected a JSON object")
    forbidden = sorted(k for k in IMMUTABLE_FIELDS if k in raw)
    if forbidden:
        raise ValidationFailed(
            "one or more fields cannot be modified", {"forbidden_fields": forbidden}
        )
    body: PoolUpdate = _decode(PoolUpdate, {k: v for k, v in raw.items() if k != "config"})
    if body.name is not None and (problem := validate_pool_name(body.name)):
        raise _bad(problem, "name")
    config: JSONObject | None = None
    if "config" in raw:
        _check_config(raw["config"])
        config = raw["config"]
    return PoolPatch(name=body.name, config=config)


def parse_create(raw: object) -> PoolCreate:
    """The create body, checked in the order of docs/pool-contract.md §4.2 (no I/O): agent-reported
    fields refused, then name, type, path, and config last."""
    if not isinstance(raw, dict):
        raise ValidationFailed("invalid request body: expected a JSON object")
    forbidden = sorted(k for k in AGENT_REPORTED_FIELDS if k in raw)
    if forbidden:
        raise ValidationFailed(
            "agent-reported fields are not accepted", {"forbidden_fields": forbidden}
        )
    # config is checked last of the fields (docs/pool-contract.md §4.2: name, type, path, config)
    body: PoolCreate = _decode(PoolCreate, {k: v for k, v in raw.items() if k != "config"})
    if not body.node:
        raise _bad("node is required", "node")
    for field, problem in (
        ("name", validate_pool_name(body.name)),
        ("type", validate_pool_type(body.type)),
        ("path", validate_pool_path(body.path)),
    ):
        if problem:
            raise _bad(problem, field)
    if "config" in raw:
        _check_config(raw["config"])
        body.config = raw["config"]
    return body

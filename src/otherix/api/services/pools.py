"""Storage pool rules: validation order, allowlist, per-node uniqueness,
delete gating by VM disks, scans, and the flat and concept views.

The create validation order is the contract's (section 1.4.4): forbidden
agent-reported keys, decode, node required, name/type/path/config syntax, the
allowlist, then the node lookup, then the insert (where the database's unique
constraint decides races: exactly one of N concurrent creates wins).

A dry run (``create(..., dry_run=True)``, ``POST /v1/storage-pools?dry_run=true``)
is the same create up to and including the insert, in a transaction that is
then rolled back (``services.dryrun``): every check, the store's own
constraints included, decides as for a real create, and nothing is kept (no
row, no revision bump, no watch wake-up).
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError

from otherix.api.deps import Deps
from otherix.api.services import defaultpool
from otherix.api.services.dryrun import Rehearsal
from otherix.api.services.nodes import (
    name_param,
    node_filter_id,
    node_not_found,
    projected_status,
)
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
    StoragePool,
)
from otherix.models.validation import (
    looks_like_uuid,
    path_allowed,
    validate_pool_name,
    validate_pool_path,
    validate_pool_type,
)
from otherix.store import ForeignKeyViolation, UniqueViolation
from otherix.store import nodes as qn
from otherix.store import pools as qp

DUPLICATE = "another storage pool with this name already exists on the target node"


def pool_not_found(ref: str) -> str:
    return not_found_message("pool", ref, "otherix pool list")


IN_USE = "storage pool is in use by virtual machine disks; remove or migrate them first"


def pool_view(row: dict[str, Any], default_name: str | None, with_images: bool) -> StoragePool:
    orphaned = row["node_deleted_at"] is not None
    available = row["available_bytes"]
    effective = None
    if available is not None:
        effective = max(0, available - int(row.get("committed_gib") or 0) * (1 << 30))
    pressure = None
    if row["pressure_since"] is not None:
        pressure = {"since": row["pressure_since"], "consecutive_count": row["pressure_count"]}
    return StoragePool.model_validate(
        {
            **row,
            "node": "" if orphaned else row["node_name"],
            "node_status": None
            if orphaned
            else projected_status(
                {"status": row["node_liveness"], "cordoned": row["node_cordoned"]}
            ),
            "available_bytes_effective": effective,
            "is_cluster_default": default_name is not None
            and row["name_lower"] == default_name.lower(),
            "disk_pressure": pressure,
            "images": row["images"] if with_images else [],
        }
    )


def _bad(message: str, field: str) -> ValidationFailed:
    return ValidationFailed(message, {"field": field})


def _resolve_rows(deps: Deps, ref: str) -> list[dict[str, Any]]:
    with deps.db.read() as conn:
        if looks_like_uuid(ref):
            row = qp.get_pool(conn, ref.lower())
            return [row] if row else []
        return qp.get_pools_by_name(conn, ref)


def resolve_one(deps: Deps, ref: str) -> dict[str, Any]:
    """A UUID, or a name that maps to exactly one instance (else 404 / ambiguous)."""
    rows = _resolve_rows(deps, ref)
    if not rows:
        raise NotFound(pool_not_found(ref))
    if len(rows) > 1:
        raise PoolNameAmbiguous(
            f"pool name {ref!r} maps to {len(rows)} instances; use the instance UUID",
            {"name": ref, "instances": [{"id": r["id"], "node": r["node_name"]} for r in rows]},
        )
    return rows[0]


def get(deps: Deps, ref: str) -> StoragePool | PoolConceptView:
    rows = _resolve_rows(deps, ref)
    if not rows:
        raise NotFound(pool_not_found(ref))
    with deps.db.read() as conn:
        default_name = defaultpool.current_name(conn)
    if looks_like_uuid(ref):
        return pool_view(rows[0], default_name, with_images=True)
    instances = [pool_view(r, default_name, with_images=True) for r in rows]
    return PoolConceptView(
        name=rows[0]["name"],
        type=rows[0]["type"],
        is_cluster_default=instances[0].is_cluster_default,
        instances=instances,
    )


def list_pools(
    deps: Deps, *, limit: int, cursor: str | None, node: str | None, pool_type: str | None
) -> tuple[list[StoragePool], str | None]:
    after = decode_cursor(cursor) if cursor else None
    if pool_type is not None and (problem := validate_pool_type(pool_type)):
        raise _bad(problem, "type")
    with deps.db.read() as conn:
        node_id = node_filter_id(conn, node)
        rows = qp.list_pools(
            conn, after=after, limit=limit + 1, node_id=node_id, pool_type=pool_type
        )
        default_name = defaultpool.current_name(conn)
    page, nxt = split_page(rows, limit)
    return [pool_view(r, default_name, with_images=False) for r in page], nxt


def _check_config(value: object) -> None:
    if not isinstance(value, dict):
        raise _bad("config must be a JSON object", "config")


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


def create(deps: Deps, raw: object, *, dry_run: bool = False) -> StoragePool:
    """Create one pool instance; ``dry_run`` decides the same and writes nothing."""
    if not isinstance(raw, dict):
        raise ValidationFailed("invalid request body: expected a JSON object")
    forbidden = sorted(k for k in AGENT_REPORTED_FIELDS if k in raw)
    if forbidden:
        raise ValidationFailed(
            "agent-reported fields are not accepted", {"forbidden_fields": forbidden}
        )
    # config is checked last of the fields (contract order: name, type, path, config)
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
    prefixes = deps.settings.storage_pools.allowed_path_prefixes
    if not path_allowed(body.path, prefixes):
        raise PathNotAllowed(details={"allowed_prefixes": list(prefixes), "path": body.path})
    name_param(body.node, "node")
    now = deps.clock.now()
    pool_id = str(uuid.uuid4())
    try:
        with deps.db.write() as conn:
            node = qn.get_node_by_name(conn, body.node)
            if node is None:
                raise NotFound(node_not_found(body.node), {"node": body.node})
            qp.insert_pool(
                conn,
                {
                    "id": pool_id,
                    "node_id": node["id"],
                    "name": body.name,
                    "name_lower": body.name.lower(),
                    "type": body.type,
                    "path": body.path,
                    "config": body.config,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            qn.bump_revision(conn, node["id"])
            row = qp.get_pool(conn, pool_id)
            default_name = defaultpool.current_name(conn)
            if dry_run:
                assert row is not None
                raise Rehearsal(pool_view(row, default_name, with_images=False))
    except UniqueViolation as exc:
        raise Conflict(DUPLICATE, {"field": "name"}) from exc
    except Rehearsal as rehearsal:
        return rehearsal.answer  # type: ignore[no-any-return]
    assert row is not None
    deps.hub.publish([row["node_id"]])
    return pool_view(row, default_name, with_images=False)


def update(deps: Deps, ref: str, raw: object) -> StoragePool:
    if not isinstance(raw, dict):
        raise ValidationFailed("invalid request body: expected a JSON object")
    forbidden = sorted(k for k in IMMUTABLE_FIELDS if k in raw)
    if forbidden:
        raise ValidationFailed(
            "one or more fields cannot be modified", {"forbidden_fields": forbidden}
        )
    target = resolve_one(deps, ref)
    body: PoolUpdate = _decode(PoolUpdate, {k: v for k, v in raw.items() if k != "config"})
    values: dict[str, Any] = {}
    if body.name is not None:
        if problem := validate_pool_name(body.name):
            raise _bad(problem, "name")
        values.update(name=body.name, name_lower=body.name.lower())
    if "config" in raw:
        _check_config(raw["config"])
        values["config"] = raw["config"]
    try:
        with deps.db.write() as conn:
            if values:
                values["updated_at"] = deps.clock.now()
                if not qp.update_pool(conn, target["id"], values):
                    raise NotFound(pool_not_found(ref))
                qn.bump_revision(conn, target["node_id"])
            row = qp.get_pool(conn, target["id"])
            default_name = defaultpool.current_name(conn)
    except UniqueViolation as exc:
        raise Conflict(DUPLICATE, {"field": "name"}) from exc
    assert row is not None
    if values:
        deps.hub.publish([row["node_id"]])
    return pool_view(row, default_name, with_images=False)


def delete(deps: Deps, ref: str) -> None:
    """Refused while VM disks reference the pool; the check and the delete are
    one transaction, and the disks' foreign key backs it up."""
    target = resolve_one(deps, ref)
    try:
        with deps.db.write() as conn:
            if qp.lock_pool(conn, target["id"]) is None:
                raise NotFound(pool_not_found(ref))
            disks = qp.count_disks(conn, target["id"])
            if disks:
                raise Conflict(IN_USE, {"blocking_resources": {"vm_disks": disks}})
            qp.delete_pool(conn, target["id"])
            qn.bump_revision(conn, target["node_id"])
    except ForeignKeyViolation as exc:  # a disk landed between count and delete
        raise Conflict(IN_USE, {"blocking_resources": {"vm_disks": 1}}) from exc
    deps.hub.publish([target["node_id"]])

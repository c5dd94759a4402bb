"""The cluster default pool: the setting, its seeding, and provisioning per node.

- ``cluster_settings.default_pool_name`` holds the cluster default (a pool
  *name*). At first start it is seeded from ``storage_pools.default_pool_name``
  when the key has never been written; an admin's later unset is kept.
  Setting it locks every instance of the name, as a pool delete does, so a
  delete of the last instance and a set of its name never both succeed.
- Provisioning uses ``storage_pools.default_pool_name`` from config: a node
  gets an instance of that name at ``<first allowed prefix><name>``, **once**:
  at its first promotion to ready (``on_promoted``, from the heartbeat), which
  ``nodes.default_pool_provisioned_at`` records, never at a later return from
  unreachable (docs/pool-contract.md §5.3; an older design provisioned at every
  promotion, but a deleted or renamed default pool must not come back at the
  old path). ``provision`` runs the
  step again on an admin's request (``otherix node provision-default-pool``).
- The pure rules (the plan, what blocks it, the last-instance rule) are
  ``otherix.domain.defaultpool``; this module does the reads, writes and events.
- It never provisions over a path another pool on the node holds (equal,
  inside or containing, ``domain.overlap``): that, like every outcome, is an
  event on the node, not a failure. An empty name opts out; a name that is not
  a valid pool name, escapes the prefix or lands on an allowed prefix itself
  is refused (logged, an event, nothing created).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from otherix.api.deps import Deps
from otherix.domain import defaultpool as rules
from otherix.domain.defaultpool import Plan
from otherix.domain.overlap import PoolPath
from otherix.errors import (
    DefaultPoolNotSet,
    NotFound,
    PoolNotFoundForName,
    ValidationFailed,
    not_found_message,
)
from otherix.models.nodes import DefaultPoolProvisioned
from otherix.models.pools import DefaultPool
from otherix.store import Tx
from otherix.store.events import store as qe
from otherix.store.nodes import store as qn
from otherix.store.pools import store as qp
from otherix.store.ports.nodes import NodeRow
from otherix.store.ports.pools import NewPool
from otherix.store.ports.settings import DEFAULT_POOL_NAME
from otherix.store.settings import store as qs

log = logging.getLogger(__name__)


def seed(deps: Deps) -> None:
    name = deps.settings.storage_pools.default_pool_name
    with deps.db.write() as conn:
        if not qs.has_setting(conn, DEFAULT_POOL_NAME):
            qs.put_setting(conn, DEFAULT_POOL_NAME, name or None, deps.clock.now())


def _plan(deps: Deps) -> Plan:
    cfg = deps.settings.storage_pools
    return rules.plan(cfg.default_pool_name, cfg.allowed_path_prefixes)


def _ref(p: PoolPath) -> dict[str, str]:
    return {"id": p.id, "name": p.name, "path": p.path}


def _event(
    conn: Any, node_id: str, now: Any, type_: str, reason: str, message: str, **details: Any
) -> None:
    qe.add_event(
        conn, node_id, type_=type_, reason=reason, message=message, details=details, now=now
    )


def _run(deps: Deps, conn: Any, node_id: str, node_name: str, plan: Plan) -> DefaultPoolProvisioned:
    """The step on a node whose row the caller has locked or claimed."""
    now = deps.clock.now()
    result: dict[str, Any] = {"node": node_name, "name": plan.name, "path": plan.path}
    if plan.outcome is not None:
        if plan.outcome == "invalid_name":
            _event(conn, node_id, now, "warning", "default_pool_invalid_name", plan.message)
        return DefaultPoolProvisioned(**result, outcome=plan.outcome, message=plan.message)
    assert plan.name is not None
    assert plan.path is not None
    existing = [PoolPath(r.id, r.name, r.path) for r in qp.paths_on_nodes(conn, [node_id])]
    found = rules.obstacle(plan.name, plan.path, existing)
    if isinstance(found, PoolPath):
        same = found
        message = (
            f'node {node_name} already has a pool named "{same.name}" ({same.id}, path '
            f'"{same.path}"); nothing provisioned'
        )
        _event(conn, node_id, now, "normal", "default_pool_exists", message, pool=_ref(same))
        return DefaultPoolProvisioned(**result, outcome="exists", message=message, pool=_ref(same))
    if found is not None:
        hit = found
        message = (
            f'default pool "{plan.name}" not provisioned on node {node_name}: its path '
            f'"{plan.path}" overlaps storage pool "{hit.other.name}" ({hit.other.id}, path '
            f'"{hit.other.path}"); one directory holds one pool. Create a pool of that name '
            "at a free path with 'otherix pool create', or move the other pool"
        )
        _event(
            conn, node_id, now, "warning", "default_pool_path_held", message,
            path=plan.path, other_pool=_ref(hit.other),
        )  # fmt: skip
        return DefaultPoolProvisioned(
            **result, outcome="path_held", message=message, other_pool=_ref(hit.other)
        )
    pool_id = str(uuid.uuid4())
    qp.insert_pool(
        conn,
        NewPool(
            id=pool_id,
            node_id=node_id,
            name=plan.name,
            type="local_dir",
            path=plan.path,
            config={},
            created_at=now,
        ),
    )
    qn.bump_revision(conn, node_id)
    created = {"id": pool_id, "name": plan.name, "path": plan.path}
    message = f'default pool "{plan.name}" provisioned on node {node_name} at {plan.path}'
    _event(conn, node_id, now, "normal", "default_pool_provisioned", message, pool=created)
    return DefaultPoolProvisioned(**result, outcome="created", message=message, pool=created)


def _log(result: DefaultPoolProvisioned) -> None:
    if result.outcome == "created":
        log.info("%s", result.message)
    elif result.outcome in ("path_held", "invalid_name"):
        log.warning("%s", result.message)
    else:
        log.debug("%s", result.message)


def on_promoted(deps: Deps, node_id: str, node_name: str) -> bool:
    """The heartbeat's hook at a promotion to ready; True if a pool was created.

    Runs the step only the first time (a compare-and-set on
    ``default_pool_provisioned_at``, so two replicas never both run it). An
    invalid configured name leaves the step unclaimed: fixing the config and
    the next promotion retry it.
    """
    plan = _plan(deps)
    with deps.db.write() as conn:
        if plan.outcome == "invalid_name":
            result = _run(deps, conn, node_id, node_name, plan)
        elif not qn.claim_default_pool_step(conn, node_id, deps.clock.now()):
            return False
        else:
            result = _run(deps, conn, node_id, node_name, plan)
    _log(result)
    if result.outcome == "created":
        deps.hub.publish([node_id])
    return result.outcome == "created"


def provision(deps: Deps, node: NodeRow) -> DefaultPoolProvisioned:
    """Run the step now on a live node (an admin's request) and record it as done."""
    plan = _plan(deps)
    with deps.db.write() as conn:
        if not qn.lock_node(conn, node.id):
            raise NotFound(
                not_found_message("node", node.name, "otherix node list"),
                {"node": node.name},
            )
        result = _run(deps, conn, node.id, node.name, plan)
        if plan.outcome != "invalid_name":
            qn.set_default_pool_step(conn, node.id, deps.clock.now())
    _log(result)
    if result.outcome == "created":
        deps.hub.publish([node.id])
    return result


def get(deps: Deps) -> DefaultPool:
    with deps.db.read() as conn:
        name = qs.get_setting(conn, DEFAULT_POOL_NAME)
    if not name:
        raise DefaultPoolNotSet()
    return DefaultPool(name=name)


def put(deps: Deps, raw_name: str) -> DefaultPool:
    name = raw_name.strip()
    if not name:
        raise ValidationFailed("name is required", {"field": "name"})
    with deps.db.write() as conn:
        # the same locks a pool delete takes: never set a name whose last instance
        # is being deleted (on PostgreSQL; SQLite writers are serialised anyway)
        qp.lock_instances(conn, name)
        canonical = qp.first_name_match(conn, name)
        if canonical is None:
            raise PoolNotFoundForName(
                not_found_message("pool", name, "otherix pool list"), {"name": name}
            )
        qs.put_setting(conn, DEFAULT_POOL_NAME, canonical, deps.clock.now())
    return DefaultPool(name=canonical)


def clear(deps: Deps) -> None:
    with deps.db.write() as conn:
        qs.put_setting(conn, DEFAULT_POOL_NAME, None, deps.clock.now())


def current_name(conn: Tx) -> str | None:
    return qs.get_setting(conn, DEFAULT_POOL_NAME)

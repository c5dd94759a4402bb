"""The cluster default pool: the setting, its seeding, and provisioning per node.

- ``cluster_settings.default_pool_name`` holds the cluster default (a pool
  *name*). At first start ``bootstrap.open_deps`` seeds it from
  ``storage_pools.default_pool_name`` when the key has never been written; an
  admin's later unset is kept.
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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from otherix.api.clock import Clock
from otherix.api.settings import ApiSettings
from otherix.api.watch import WatchHub
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
from otherix.store import Database, Tx
from otherix.store.ports.events import EventStore
from otherix.store.ports.nodes import NodeRow, NodeStore
from otherix.store.ports.pools import NewPool, PoolStore
from otherix.store.ports.settings import DEFAULT_POOL_NAME, SettingsStore

log = logging.getLogger(__name__)


@dataclass(kw_only=True, eq=False)
class DefaultPoolService:
    """The defaultpool service, built once by ``api/compose.py`` with the collaborators below."""

    settings: ApiSettings
    db: Database
    clock: Clock
    hub: WatchHub
    event_store: EventStore
    node_store: NodeStore
    pool_store: PoolStore
    settings_store: SettingsStore

    def _plan(self) -> Plan:
        cfg = self.settings.storage_pools
        return rules.plan(cfg.default_pool_name, cfg.allowed_path_prefixes)

    def _event(
        self,
        conn: Tx,
        node_id: str,
        now: datetime,
        type_: str,
        reason: str,
        message: str,
        **details: Any,
    ) -> None:
        self.event_store.add_event(
            conn, node_id, type_=type_, reason=reason, message=message, details=details, now=now
        )

    def _run(self, conn: Tx, node_id: str, node_name: str, plan: Plan) -> DefaultPoolProvisioned:
        """The step on a node whose row the caller has locked or claimed."""
        now = self.clock.now()
        result: dict[str, Any] = {"node": node_name, "name": plan.name, "path": plan.path}
        if plan.outcome is not None:
            if plan.outcome == "invalid_name":
                self._event(
                    conn, node_id, now, "warning", "default_pool_invalid_name", plan.message
                )
            return DefaultPoolProvisioned(**result, outcome=plan.outcome, message=plan.message)
        assert plan.name is not None
        assert plan.path is not None
        existing = [
            PoolPath(r.id, r.name, r.path) for r in self.pool_store.paths_on_nodes(conn, [node_id])
        ]
        found = rules.obstacle(plan.name, plan.path, existing)
        if isinstance(found, PoolPath):
            same = found
            message = (
                f'node {node_name} already has a pool named "{same.name}" ({same.id}, path '
                f'"{same.path}"); nothing provisioned'
            )
            self._event(
                conn, node_id, now, "normal", "default_pool_exists", message, pool=_ref(same)
            )
            return DefaultPoolProvisioned(
                **result, outcome="exists", message=message, pool=_ref(same)
            )
        if found is not None:
            hit = found
            message = (
                f'default pool "{plan.name}" not provisioned on node {node_name}: its path '
                f'"{plan.path}" overlaps storage pool "{hit.other.name}" ({hit.other.id}, path '
                f'"{hit.other.path}"); one directory holds one pool. Create a pool of that name '
                "at a free path with 'otherix pool create', or move the other pool"
            )
            self._event(
                conn, node_id, now, "warning", "default_pool_path_held", message,
                path=plan.path, other_pool=_ref(hit.other))  # fmt: skip
            return DefaultPoolProvisioned(
                **result, outcome="path_held", message=message, other_pool=_ref(hit.other)
            )
        pool_id = str(uuid.uuid4())
        self.pool_store.insert_pool(
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
        self.node_store.bump_revision(conn, node_id)
        created = {"id": pool_id, "name": plan.name, "path": plan.path}
        message = f'default pool "{plan.name}" provisioned on node {node_name} at {plan.path}'
        self._event(conn, node_id, now, "normal", "default_pool_provisioned", message, pool=created)
        return DefaultPoolProvisioned(**result, outcome="created", message=message, pool=created)

    def on_promoted(self, node_id: str, node_name: str) -> bool:
        """The heartbeat's hook at a promotion to ready; True if a pool was created.

        Runs the step only the first time (a compare-and-set on
        ``default_pool_provisioned_at``, so two replicas never both run it). An
        invalid configured name leaves the step unclaimed: fixing the config and
        the next promotion retry it.
        """
        plan = self._plan()
        with self.db.write() as conn:
            if plan.outcome == "invalid_name":
                result = self._run(conn, node_id, node_name, plan)
            elif not self.node_store.claim_default_pool_step(conn, node_id, self.clock.now()):
                return False
            else:
                result = self._run(conn, node_id, node_name, plan)
        _log(result)
        if result.outcome == "created":
            self.hub.publish([node_id])
        return result.outcome == "created"

    def provision(self, node: NodeRow) -> DefaultPoolProvisioned:
        """Run the step now on a live node (an admin's request) and record it as done."""
        plan = self._plan()
        with self.db.write() as conn:
            if not self.node_store.lock_node(conn, node.id):
                raise NotFound(
                    not_found_message("node", node.name, "otherix node list"), {"node": node.name}
                )
            result = self._run(conn, node.id, node.name, plan)
            if plan.outcome != "invalid_name":
                self.node_store.set_default_pool_step(conn, node.id, self.clock.now())
        _log(result)
        if result.outcome == "created":
            self.hub.publish([node.id])
        return result

    def get(self) -> DefaultPool:
        with self.db.read() as conn:
            name = self.settings_store.get_setting(conn, DEFAULT_POOL_NAME)
        if not name:
            raise DefaultPoolNotSet()
        return DefaultPool(name=name)

    def put(self, raw_name: str) -> DefaultPool:
        name = raw_name.strip()
        if not name:
            raise ValidationFailed("name is required", {"field": "name"})
        with self.db.write() as conn:
            # the same locks a pool delete takes: never set a name whose last instance
            # is being deleted (on PostgreSQL; SQLite writers are serialised anyway)
            self.pool_store.lock_instances(conn, name)
            canonical = self.pool_store.first_name_match(conn, name)
            if canonical is None:
                raise PoolNotFoundForName(
                    not_found_message("pool", name, "otherix pool list"), {"name": name}
                )
            self.settings_store.put_setting(conn, DEFAULT_POOL_NAME, canonical, self.clock.now())
        return DefaultPool(name=canonical)

    def clear(self) -> None:
        with self.db.write() as conn:
            self.settings_store.put_setting(conn, DEFAULT_POOL_NAME, None, self.clock.now())

    def current_name(self, conn: Tx) -> str | None:
        return self.settings_store.get_setting(conn, DEFAULT_POOL_NAME)


def _ref(p: PoolPath) -> dict[str, str]:
    return {"id": p.id, "name": p.name, "path": p.path}


def _log(result: DefaultPoolProvisioned) -> None:
    if result.outcome == "created":
        log.info("%s", result.message)
    elif result.outcome in ("path_held", "invalid_name"):
        log.warning("%s", result.message)
    else:
        log.debug("%s", result.message)

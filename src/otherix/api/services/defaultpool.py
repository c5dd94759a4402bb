"""The cluster default pool: the setting, its seeding, and auto-provisioning.

- ``cluster_settings.default_pool_name`` holds the cluster default (a pool
  *name*). At first start it is seeded from ``storage_pools.default_pool_name``
  when the key has never been written; an admin's later unset is kept.
- Auto-provisioning uses ``storage_pools.default_pool_name`` from config: when
  a node is promoted to ready it gets an instance of that name at
  ``<first allowed prefix><name>``. An empty name opts out; a name that would
  escape the prefix is refused (logged, nothing created).
"""

from __future__ import annotations

import logging
import uuid

from otherix.api.deps import Deps
from otherix.errors import (
    DefaultPoolNotSet,
    PoolNotFoundForName,
    ValidationFailed,
    not_found_message,
)
from otherix.models.pools import DefaultPool
from otherix.models.validation import default_pool_path, validate_pool_name
from otherix.store import UniqueViolation
from otherix.store import nodes as qn
from otherix.store import pools as qp
from otherix.store import settings as qs

log = logging.getLogger(__name__)


def seed(deps: Deps) -> None:
    name = deps.settings.storage_pools.default_pool_name
    with deps.db.write() as conn:
        if not qs.has_setting(conn, qs.DEFAULT_POOL_NAME):
            qs.put_setting(conn, qs.DEFAULT_POOL_NAME, name or None, deps.clock.now())


def ensure_default_pool(deps: Deps, node_id: str, node_name: str) -> bool:
    """Create the default pool instance on a freshly ready node; True if created."""
    name = deps.settings.storage_pools.default_pool_name
    if not name:
        return False
    if problem := validate_pool_name(name):  # the same rule an API create applies
        log.error(
            "default pool name %r is not a valid pool name (%s); not provisioning", name, problem
        )
        return False
    prefix = deps.settings.storage_pools.allowed_path_prefixes[0]
    path = default_pool_path(prefix, name)
    if path is None:
        log.error("default pool name %r escapes prefix %r; not provisioning", name, prefix)
        return False
    now = deps.clock.now()
    try:
        with deps.db.write() as conn:
            qp.insert_pool(
                conn,
                {
                    "id": str(uuid.uuid4()),
                    "node_id": node_id,
                    "name": name,
                    "name_lower": name.lower(),
                    "type": "local_dir",
                    "path": path,
                    "config": {},
                    "created_at": now,
                    "updated_at": now,
                },
            )
            qn.bump_revision(conn, node_id)
    except UniqueViolation:
        log.debug("default pool already exists on node %s", node_name)
        return False
    log.info("default pool %s provisioned on node %s at %s", name, node_name, path)
    deps.hub.publish([node_id])
    return True


def get(deps: Deps) -> DefaultPool:
    with deps.db.read() as conn:
        name = qs.get_setting(conn, qs.DEFAULT_POOL_NAME)
    if not name:
        raise DefaultPoolNotSet()
    return DefaultPool(name=name)


def put(deps: Deps, raw_name: str) -> DefaultPool:
    name = raw_name.strip()
    if not name:
        raise ValidationFailed("name is required", {"field": "name"})
    with deps.db.write() as conn:
        canonical = qp.first_name_match(conn, name)
        if canonical is None:
            raise PoolNotFoundForName(
                not_found_message("pool", name, "otherix pool list"), {"name": name}
            )
        qs.put_setting(conn, qs.DEFAULT_POOL_NAME, canonical, deps.clock.now())
    return DefaultPool(name=canonical)


def clear(deps: Deps) -> None:
    with deps.db.write() as conn:
        qs.put_setting(conn, qs.DEFAULT_POOL_NAME, None, deps.clock.now())


def current_name(conn: object) -> str | None:
    return qs.get_setting(conn, qs.DEFAULT_POOL_NAME)  # type: ignore[arg-type]

"""``POST /v1/storage-pools/{id}/reinit``: start a pool afresh, on purpose (admin).

Called by the pools route (``otherix.api.routes.pools``). A pool whose
identity check failed on its node (``pool_missing``,
``pool_identity_mismatch``, ``pool_device_changed``: its directory, its
marker or its device is gone) is never re-created by the agent on its own.
Reinitialising it forgets what the control plane knows of its identity: a
new marker id, identity mode ``create``, status ``pending``, and the node's
desired revision is bumped, so its agent materialises the pool afresh (the
directory if missing, a new marker; an earlier marker of this same pool is
replaced, a foreign one never) and reports it ``ready``.

Refused, nothing changed, in one transaction that locks the pool row (the
lock a VM binding takes too, so no disk can land in between):

- while VM disks reference the pool: ``409 conflict`` with
  ``details.blocking_resources.vm_disks`` (a disk's data may be on the disk
  that is not mounted; starting afresh would hide it for good);
- for a pool that is not failed for one of those reasons: ``409 conflict``,
  ``details.reason: "pool_not_failed"`` with ``current_status`` and
  ``reconciliation_reason``. A ready or pending pool has nothing to start
  afresh, and other failures (an unwritable root, an overlap, a refused
  path) are not identity problems: the agent retries them on its own once
  their cause is fixed;
- for a pool whose node was deleted: ``409 conflict`` (``current_status: gone``).

Unknown ids and names answer 404, an ambiguous name 400
``pool_name_ambiguous``, a caller without ``storage_pool:manage`` 403.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Final

from otherix.api.services.defaultpool import DefaultPoolService
from otherix.api.services.pools import PoolService, pool_not_found
from otherix.api.watch import WatchHub
from otherix.errors import Conflict, NotFound
from otherix.models.pools import StoragePool
from otherix.store import Database
from otherix.store.ports.nodes import NodeStore
from otherix.store.ports.pools import PoolRow, PoolStore

__all__ = ["IDENTITY_REASONS", "PoolReinitService"]

log = logging.getLogger(__name__)

#: Failure reasons reinit is meant for.
IDENTITY_REASONS: Final = ("pool_missing", "pool_identity_mismatch", "pool_device_changed")
IN_USE: Final = (
    "storage pool holds VM disks; reinitialising it would abandon them "
    "(mount the pool's disk back, or delete the VMs first)"
)


def _refuse_state(row: PoolRow) -> None:
    status, reason = row.reconciliation_status, row.reconciliation_reason
    if status == "failed" and reason in IDENTITY_REASONS:
        return
    why = f"failed with {reason}" if status == "failed" else str(status)
    raise Conflict(
        f"storage pool is {why}; reinit only starts afresh a pool whose identity check failed "
        f"({', '.join(IDENTITY_REASONS)})",
        {"reason": "pool_not_failed", "current_status": status, "reconciliation_reason": reason},
    )


@dataclass(kw_only=True, eq=False)
class PoolReinitService:
    """The poolreinit service, built once by ``api/compose.py`` with the collaborators below."""

    db: Database
    hub: WatchHub
    node_store: NodeStore
    pool_store: PoolStore
    default_pool_service: DefaultPoolService
    pool_service: PoolService

    def reinit(self, ref: str) -> StoragePool:
        """Reinitialise the pool ``ref`` (UUID or unique name); returns its view (``pending``)."""
        target = self.pool_service.resolve_one(ref)
        marker_id = str(uuid.uuid4())
        with self.db.write() as conn:
            if self.pool_store.lock_pool(conn, target.id) is None:
                raise NotFound(pool_not_found(ref))
            row = self.pool_store.get_pool(conn, target.id)
            if row is None:
                raise NotFound(pool_not_found(ref))
            if row.node_deleted_at is not None:
                raise Conflict("owning node is gone", {"current_status": "gone"})
            disks = self.pool_store.count_disks(conn, row.id)
            if disks:
                raise Conflict(IN_USE, {"blocking_resources": {"vm_disks": disks}})
            _refuse_state(row)
            self.pool_store.reinit_identity(conn, row.id, marker_id)
            self.node_store.bump_revision(conn, row.node_id)
            row = self.pool_store.get_pool(conn, row.id)
            default_name = self.default_pool_service.current_name(conn)
        assert row is not None
        self.hub.publish([row.node_id])
        log.info(
            "pool reinitialised: %s on node %s (new marker %s)", row.name, row.node_name, marker_id
        )
        return self.pool_service.pool_view(row, default_name, with_images=False)

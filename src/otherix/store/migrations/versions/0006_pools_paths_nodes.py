"""One directory, one pool; the default pool once per node; no dangling pools

Schema:

- ``nodes.default_pool_provisioned_at`` (nullable): when the one automatic
  default-pool step ran for the node. The control plane runs it at a node's
  first promotion to ready and never again (``otherix node
  provision-default-pool`` runs it on request).
- ``node_events``: a small per-node log (the newest 50 per node are kept)
  of what the control plane did or declined to do for a node.

What it does to existing rows:

- Every node that has been ready before (any status but ``pending``, or a
  ``pending`` node with a recorded heartbeat, i.e. a readmitted one, or a
  deleted node) gets ``default_pool_provisioned_at = status_changed_at``, so
  the upgrade provisions nothing anew: a default pool an operator deleted or
  renamed stays deleted or renamed. A node that never heartbeated keeps NULL
  and gets its default pool at its first promotion, as before.
- Pool instances of deleted nodes that hold no VM disk are removed (with
  their ``pool_status`` rows): they showed a stale ``ready`` with free space
  that no agent measures any more. The agent never deletes pool files, so the
  directories stay on the old hosts. Instances of deleted nodes that still
  hold VM disks stay, and the views show them orphaned, with no capacity and
  a condition. The downgrade cannot bring the removed rows back.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import otherix.store.schema

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "default_pool_provisioned_at",
                otherix.store.schema.UTCDateTime(timezone=True),
                nullable=True,
            )
        )
    op.create_table(
        "node_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("node_id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", _JSON, nullable=False),
        sa.Column("created_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name=op.f("fk_node_events_node_id_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_node_events")),
    )
    with op.batch_alter_table("node_events", schema=None) as batch_op:
        batch_op.create_index("ix_node_events_node_id_seq", ["node_id", "seq"], unique=False)

    op.execute(
        "UPDATE nodes SET default_pool_provisioned_at = status_changed_at "
        "WHERE status <> 'pending' OR last_heartbeat_at IS NOT NULL OR deleted_at IS NOT NULL"
    )
    # pool instances of deleted nodes that hold no VM disk (status rows first)
    op.execute(
        "DELETE FROM pool_status WHERE pool_id IN ("
        "SELECT sp.id FROM storage_pools sp JOIN nodes n ON n.id = sp.node_id "
        "WHERE n.deleted_at IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM vm_disks d WHERE d.storage_pool_id = sp.id))"
    )
    op.execute(
        "DELETE FROM storage_pools WHERE id IN ("
        "SELECT sp.id FROM storage_pools sp JOIN nodes n ON n.id = sp.node_id "
        "WHERE n.deleted_at IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM vm_disks d WHERE d.storage_pool_id = sp.id))"
    )


def downgrade() -> None:
    with op.batch_alter_table("node_events", schema=None) as batch_op:
        batch_op.drop_index("ix_node_events_node_id_seq")
    op.drop_table("node_events")
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): recreating ``nodes`` would
    # break the foreign keys that point at it
    with op.batch_alter_table("nodes", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("default_pool_provisioned_at")

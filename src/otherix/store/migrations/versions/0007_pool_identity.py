"""Pool identity: failure reasons, identity markers, missing VM disks

Adds to ``pool_status`` the machine-readable failure reason
(``reconciliation_reason``), the identity marker id the control plane chose
for the pool (``marker_id``) and what the agent may do to find it
(``identity_mode``: ``create``, ``adopt`` or ``verify``); adds to
``vm_disks`` ``missing_since`` (when the agent reported the disk file gone).

Existing rows: every pool gets a fresh ``marker_id``. A pool that was ever
reconciled ``ready`` (status ``ready``, or a capacity reported) gets
``identity_mode = 'adopt'``: the agent writes the marker into its existing
directory once, and only if the pool layout (``images/``, ``scratch/``,
``vms/``) is there, so an unmounted disk is not adopted; after the agent
reports it ready with the marker it is ``verify``. Every other pool (never
materialised) is ``create``. ``reconciliation_reason`` and ``missing_since``
start null; the next full report of each agent fills them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

import otherix.store.schema

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pool_status", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reconciliation_reason", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column(
                "identity_mode", sa.String(length=16), nullable=False, server_default="create"
            )
        )
        batch_op.add_column(sa.Column("marker_id", sa.String(length=36), nullable=True))

    with op.batch_alter_table("vm_disks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "missing_since", otherix.store.schema.UTCDateTime(timezone=True), nullable=True
            )
        )

    conn = op.get_bind()
    status = sa.table(
        "pool_status",
        sa.column("pool_id", sa.String),
        sa.column("reconciliation_status", sa.String),
        sa.column("capacity_bytes", sa.BigInteger),
        sa.column("identity_mode", sa.String),
        sa.column("marker_id", sa.String),
    )
    rows = conn.execute(
        sa.select(status.c.pool_id, status.c.reconciliation_status, status.c.capacity_bytes)
    ).all()
    for pool_id, reconciliation, capacity in rows:
        was_ready = reconciliation == "ready" or capacity is not None
        conn.execute(
            status.update()
            .where(status.c.pool_id == pool_id)
            .values(marker_id=str(uuid.uuid4()), identity_mode="adopt" if was_ready else "create")
        )


def downgrade() -> None:
    with op.batch_alter_table("vm_disks", schema=None) as batch_op:
        batch_op.drop_column("missing_since")

    with op.batch_alter_table("pool_status", schema=None) as batch_op:
        batch_op.drop_column("marker_id")
        batch_op.drop_column("identity_mode")
        batch_op.drop_column("reconciliation_reason")

"""VM placement and disk results

Adds to ``vms`` the requested pool (``pool_ref``, for list filters), the
placement details of a pending VM (``status_details``) and its current task
(``task_id``), plus indexes for the scheduler (``phase``), the node and owner
filters; adds to ``vm_disks`` what the agent reports when it makes a disk
(``virtual_size_bytes``, ``actual_size_bytes``, ``image_sha256``) and an index
on ``vm_id``. Every new column is nullable, so existing rows stay valid.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pool_ref", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("status_details", _JSON, nullable=True))
        batch_op.add_column(sa.Column("task_id", sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f("ix_vms_phase"), ["phase"], unique=False)
        batch_op.create_index(batch_op.f("ix_vms_node_id"), ["node_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_vms_owner_id"), ["owner_id"], unique=False)

    with op.batch_alter_table("vm_disks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("virtual_size_bytes", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("actual_size_bytes", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("image_sha256", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_vm_disks_vm_id"), ["vm_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("vm_disks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vm_disks_vm_id"))
        batch_op.drop_column("image_sha256")
        batch_op.drop_column("actual_size_bytes")
        batch_op.drop_column("virtual_size_bytes")

    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vms_owner_id"))
        batch_op.drop_index(batch_op.f("ix_vms_node_id"))
        batch_op.drop_index(batch_op.f("ix_vms_phase"))
        batch_op.drop_column("task_id")
        batch_op.drop_column("status_details")
        batch_op.drop_column("pool_ref")

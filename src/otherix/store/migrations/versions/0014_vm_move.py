"""VM disk moves

Adds ``vm_disks.move_pool_id``: the pool instance a ``vm move`` is copying the
disk into (null: no move under way). It is a foreign key with ``ON DELETE
RESTRICT``, like ``storage_pool_id``, so neither the pool the disk is on nor
the one it is moving to can be deleted while the move runs. Existing disks
are not moving. No other table or column changes.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vm_disks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("move_pool_id", sa.String(36), nullable=True))
        batch_op.create_index("ix_vm_disks_move_pool_id", ["move_pool_id"])
        batch_op.create_foreign_key(
            "fk_vm_disks_move_pool_id_storage_pools",
            "storage_pools",
            ["move_pool_id"],
            ["id"],
            ondelete="RESTRICT",
        )


def downgrade() -> None:
    with op.batch_alter_table("vm_disks", schema=None) as batch_op:
        batch_op.drop_constraint("fk_vm_disks_move_pool_id_storage_pools", type_="foreignkey")
        batch_op.drop_index("ix_vm_disks_move_pool_id")
        batch_op.drop_column("move_pool_id")

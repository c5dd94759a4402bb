"""Pool usage: what a pool's VM disks, image cache and scratch hold

Adds to ``pool_status`` the nullable JSON column ``usage``: the agent's last
report of the bytes its ``vms/``, ``images/`` and ``scratch/`` hold
(``{vm_disk_bytes, vm_provisioned_bytes, image_cache_bytes, scratch_bytes}``,
issue 16). Existing rows start null ("not measured"); the next full report
of an agent that measures fills them. No other table or column changes.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pool_status", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "usage",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("pool_status", schema=None) as batch_op:
        batch_op.drop_column("usage")

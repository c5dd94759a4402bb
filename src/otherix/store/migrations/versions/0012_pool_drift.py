"""Pool drift

Adds the nullable JSON column ``pool_status.drift``: the agent's last report of what
the pool instance holds that nobody owns (orphans in ``vms/``, strays in ``images/``
and ``scratch/``; ``otherix pool doctor``). Existing pools have no drift report until
their agent sends one. No other table or column changes.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pool_status", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "drift",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("pool_status", schema=None) as batch_op:
        batch_op.drop_column("drift")

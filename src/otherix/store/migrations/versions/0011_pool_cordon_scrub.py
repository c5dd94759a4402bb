"""Pool cordon and cache scrub

Adds ``storage_pools.cordoned`` (boolean, default false: placement skips a
cordoned pool instance, ``otherix pool cordon``) and the nullable JSON column
``pool_status.scrub`` (the agent's last report of its cache scrub: progress,
when it last completed, the entries it quarantined). Existing pools stay
uncordoned and have no scrub report until their agent sends one. No other
table or column changes.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("storage_pools", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cordoned", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("pool_status", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "scrub",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("pool_status", schema=None) as batch_op:
        batch_op.drop_column("scrub")
    with op.batch_alter_table("storage_pools", schema=None) as batch_op:
        batch_op.drop_column("cordoned")

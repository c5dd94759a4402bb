"""Pool capacity samples (time to full)

Adds the table ``pool_capacity_samples``: one row per pool instance per
``capacity.sample_interval`` bucket (primary key ``(pool_id, sampled_at)``, so
two API replicas sampling the same bucket store it once), with the used bytes
(filesystem capacity - available), the capacity, and the VM disk and image
cache bytes of the agent's usage report (nullable). Rows are deleted with their
pool (``ON DELETE CASCADE``) and by the sampler once older than
``capacity.retention``. Existing tables are not changed; the history starts
empty and fills from the first sample after the upgrade.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from otherix.store.schema import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pool_capacity_samples",
        sa.Column("pool_id", sa.String(36), nullable=False),
        sa.Column("sampled_at", UTCDateTime(), nullable=False),
        sa.Column("used_bytes", sa.BigInteger(), nullable=False),
        sa.Column("capacity_bytes", sa.BigInteger(), nullable=False),
        sa.Column("vm_disk_bytes", sa.BigInteger(), nullable=True),
        sa.Column("image_cache_bytes", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["storage_pools.id"],
            name="fk_pool_capacity_samples_pool_id_storage_pools",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pool_id", "sampled_at", name="pk_pool_capacity_samples"),
    )
    op.create_index("ix_pool_capacity_samples_sampled_at", "pool_capacity_samples", ["sampled_at"])


def downgrade() -> None:
    op.drop_index("ix_pool_capacity_samples_sampled_at", table_name="pool_capacity_samples")
    op.drop_table("pool_capacity_samples")

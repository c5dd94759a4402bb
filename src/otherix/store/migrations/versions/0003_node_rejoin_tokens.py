"""node re-enrol tokens

Adds ``node_rejoin_tokens``: at most one one-time re-enrol token per node
(``otherix node reset-credentials``), stored as its sha256, removed with its
node. A new table only: existing rows of every other table are untouched and
stay valid, and no node has a re-enrol token until an admin makes one.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import otherix.store.schema

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_rejoin_tokens",
        sa.Column("node_id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=12), nullable=False),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name=op.f("fk_node_rejoin_tokens_node_id_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_node_rejoin_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_node_rejoin_tokens_token_hash")),
    )


def downgrade() -> None:
    op.drop_table("node_rejoin_tokens")

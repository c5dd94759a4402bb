"""VM runtime state

Adds ``vm_runtime``: what a VM's node last reported of its QEMU (state, pid,
accelerator, start time, exit status, the last console lines, restarts), one
row per VM, removed with the VM. A new table only: existing rows of every
other table are untouched; a VM has no row until its agent reports it, which
reads as "never started" (``stopped`` once its disk is ready).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import otherix.store.schema

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vm_runtime",
        sa.Column("vm_id", sa.String(length=36), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column(
            "observed",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("observed_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["vm_id"], ["vms.id"], name=op.f("fk_vm_runtime_vm_id_vms"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("vm_id", name=op.f("pk_vm_runtime")),
    )


def downgrade() -> None:
    op.drop_table("vm_runtime")

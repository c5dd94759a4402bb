"""Idempotency-Key answers without secrets, scoped to the user

Adds ``idempotency_keys.withheld`` (nullable: the fields of a stored answer
whose secret was removed before it was stored) and deletes every existing
``idempotency_keys`` row. Those rows are a 24-hour replay cache keyed by a
hash of the caller's Authorization header, which no request looks up any
more (keys are now scoped to the user id), and the stored answers of API
token creates in them hold the new token's secret in the clear. Losing them
only means that a request repeated with an old key within a day of the
upgrade runs again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM idempotency_keys")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("withheld", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_column("withheld")

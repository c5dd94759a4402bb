"""Sessions that end with the credential, and disabled users

Adds to ``users`` the session epoch (``session_epoch``, bumped by a password
change or reset, a role change and a disable: access and refresh tokens of an
older epoch are refused), the refresh family kept by the user's own password
change (``kept_session_id``) and ``disabled_at``; adds to ``refresh_tokens``
the epoch each token was issued in (``session_epoch``).

Old rows: every user gets epoch 0, no kept session and stays enabled; every
refresh token gets epoch 0, so refresh tokens issued before the upgrade keep
working. Access tokens issued before the upgrade carry no epoch claim and are
refused once (401); clients refresh or log in again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import otherix.store.schema

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("session_epoch", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("kept_session_id", sa.String(length=36), nullable=True))
        batch_op.add_column(
            sa.Column("disabled_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=True)
        )

    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("session_epoch", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.drop_column("session_epoch")

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("disabled_at")
        batch_op.drop_column("kept_session_id")
        batch_op.drop_column("session_epoch")

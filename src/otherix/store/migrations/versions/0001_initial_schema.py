"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import otherix.store.schema

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "cluster_settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("updated_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_cluster_settings")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("principal", sa.String(length=80), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("principal", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_table(
        "join_tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=12), nullable=False),
        sa.Column("description", sa.String(length=255), server_default="", nullable=False),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("max_uses", sa.Integer(), nullable=True),
        sa.Column("uses", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_join_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_join_tokens_token_hash")),
    )
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("name_lower", sa.String(length=253), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cordoned", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("architecture", sa.String(length=16), nullable=True),
        sa.Column("credential_hash", sa.String(length=64), nullable=False),
        sa.Column("desired_revision", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column("observed_digest", sa.String(length=64), nullable=True),
        sa.Column("created_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "status_changed_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "last_heartbeat_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("deleted_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nodes")),
        sa.UniqueConstraint("credential_hash", name=op.f("uq_nodes_credential_hash")),
    )
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.create_index(
            "uq_nodes_live_name",
            ["name_lower"],
            unique=True,
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )

    op.create_table(
        "tasks",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Integer(), server_default="0", nullable=False),
        sa.Column("resource_type", sa.String(length=32), nullable=True),
        sa.Column("resource_id", sa.String(length=36), nullable=True),
        sa.Column("node_id", sa.String(length=36), nullable=True),
        sa.Column(
            "args",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "error",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default="25", nullable=False),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index("ix_tasks_created_id", ["created_at", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tasks_node_id"), ["node_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tasks_status"), ["status"], unique=False)

    op.create_table(
        "users",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("username_lower", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username_lower", name=op.f("uq_users_username_lower")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=8), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_table(
        "node_observed",
        sa.Column("node_id", sa.String(length=36), nullable=False),
        sa.Column("agent_version", sa.String(length=64), nullable=True),
        sa.Column(
            "capabilities",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "resources",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("updated_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name=op.f("fk_node_observed_node_id_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_node_observed")),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("family_id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_refresh_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_refresh_tokens_token_hash")),
    )
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_refresh_tokens_family_id"), ["family_id"], unique=False
        )

    op.create_table(
        "storage_pools",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("node_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("name_lower", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column(
            "config",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_storage_pools_node_id_nodes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_storage_pools")),
        sa.UniqueConstraint("node_id", "name_lower", name="uq_storage_pools_node_name"),
    )
    with op.batch_alter_table("storage_pools", schema=None) as batch_op:
        batch_op.create_index("ix_storage_pools_created_id", ["created_at", "id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_storage_pools_name_lower"), ["name_lower"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_storage_pools_node_id"), ["node_id"], unique=False)

    op.create_table(
        "vms",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("name_lower", sa.String(length=253), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column(
            "spec",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("node_id", sa.String(length=36), nullable=True),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("created_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name=op.f("fk_vms_node_id_nodes")),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_vms_owner_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vms")),
        sa.UniqueConstraint("name_lower", name=op.f("uq_vms_name_lower")),
    )
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.create_index("ix_vms_created_id", ["created_at", "id"], unique=False)

    op.create_table(
        "pool_status",
        sa.Column("pool_id", sa.String(length=36), nullable=False),
        sa.Column("reconciliation_status", sa.String(length=16), nullable=False),
        sa.Column("reconciliation_error", sa.Text(), nullable=True),
        sa.Column(
            "last_reconciled_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("capacity_bytes", sa.BigInteger(), nullable=True),
        sa.Column("available_bytes", sa.BigInteger(), nullable=True),
        sa.Column("reported_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("pressure_since", otherix.store.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("pressure_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "images",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["storage_pools.id"],
            name=op.f("fk_pool_status_pool_id_storage_pools"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pool_id", name=op.f("pk_pool_status")),
    )
    op.create_table(
        "vm_disks",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("vm_id", sa.String(length=36), nullable=False),
        sa.Column("storage_pool_id", sa.String(length=36), nullable=False),
        sa.Column("device_order", sa.Integer(), server_default="0", nullable=False),
        sa.Column("size_gib", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("file_path", sa.String(length=2048), nullable=True),
        sa.Column("created_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", otherix.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["storage_pool_id"],
            ["storage_pools.id"],
            name=op.f("fk_vm_disks_storage_pool_id_storage_pools"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["vm_id"], ["vms.id"], name=op.f("fk_vm_disks_vm_id_vms"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vm_disks")),
    )
    with op.batch_alter_table("vm_disks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_vm_disks_storage_pool_id"), ["storage_pool_id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("vm_disks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vm_disks_storage_pool_id"))

    op.drop_table("vm_disks")
    op.drop_table("pool_status")
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.drop_index("ix_vms_created_id")

    op.drop_table("vms")
    with op.batch_alter_table("storage_pools", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_storage_pools_node_id"))
        batch_op.drop_index(batch_op.f("ix_storage_pools_name_lower"))
        batch_op.drop_index("ix_storage_pools_created_id")

    op.drop_table("storage_pools")
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refresh_tokens_family_id"))

    op.drop_table("refresh_tokens")
    op.drop_table("node_observed")
    op.drop_table("api_tokens")
    op.drop_table("users")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tasks_status"))
        batch_op.drop_index(batch_op.f("ix_tasks_node_id"))
        batch_op.drop_index("ix_tasks_created_id")

    op.drop_table("tasks")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_nodes_live_name",
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )

    op.drop_table("nodes")
    op.drop_table("join_tokens")
    op.drop_table("idempotency_keys")
    op.drop_table("cluster_settings")

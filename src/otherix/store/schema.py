"""SQLAlchemy Core tables: the one ``MetaData`` both backends and Alembic use.

Desired state (what users write: ``storage_pools``, ``nodes``, settings) lives
apart from observed state (what agents report: ``pool_status``,
``node_observed``), so an agent report can never overwrite intent.

Invariants the database enforces itself (so no race in Python can break them):
- one live pool per (node_id, lower(name)): ``uq_storage_pools_node_name``;
- a VM disk always references an existing pool: ``vm_disks.storage_pool_id``
  is a foreign key with ``ON DELETE RESTRICT``, so a pool delete racing a disk
  insert either sees the disk or makes the insert fail;
- one live node per lower(name): partial unique index on non-deleted rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType: Any = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


def _id() -> sa.Column[str]:
    return sa.Column("id", sa.String(36), primary_key=True)


def _ts(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, UTCDateTime(), nullable=nullable)


users = sa.Table(
    "users",
    metadata,
    _id(),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("username_lower", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    # Sessions end with the credential: bumped by a password change or reset, a
    # role change, a disable. A JWT (claim ``sep``) and a refresh token (column
    # below) older than the current epoch are refused.
    sa.Column("session_epoch", sa.Integer, nullable=False, server_default="0"),
    # The refresh family (JWT claim ``sid``) of the session that changed its own
    # password at the last bump: the one session that survives it.
    sa.Column("kept_session_id", sa.String(36), nullable=True),
    _ts("disabled_at", nullable=True),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    _id(),
    sa.Column(
        "user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("family_id", sa.String(36), nullable=False, index=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    _ts("created_at"),
    _ts("expires_at"),
    _ts("rotated_at", nullable=True),
    _ts("revoked_at", nullable=True),
    # users.session_epoch when issued: a refresh racing a password change can
    # never hand out a token that outlives it.
    sa.Column("session_epoch", sa.Integer, nullable=False, server_default="0"),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    _id(),
    sa.Column(
        "user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("prefix", sa.String(8), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    _ts("created_at"),
    _ts("expires_at", nullable=True),
    _ts("revoked_at", nullable=True),
    _ts("last_used_at", nullable=True),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("principal", sa.String(80), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=False),
    sa.Column("content_type", sa.String(100), nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    #: comma-separated fields of the stored answer whose secret was removed
    sa.Column("withheld", sa.String(255), nullable=True),
    _ts("created_at"),
)

cluster_settings = sa.Table(
    "cluster_settings",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=True),
    _ts("updated_at"),
)

nodes = sa.Table(
    "nodes",
    metadata,
    _id(),
    sa.Column("name", sa.String(253), nullable=False),
    sa.Column("name_lower", sa.String(253), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending|ready|unreachable|gone
    sa.Column("cordoned", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("architecture", sa.String(16), nullable=True),
    sa.Column("credential_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("desired_revision", sa.BigInteger, nullable=False, server_default="1"),
    sa.Column("observed_digest", sa.String(64), nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
    _ts("status_changed_at"),
    _ts("last_heartbeat_at", nullable=True),
    _ts("deleted_at", nullable=True),
    # 0006: when the one automatic default-pool step ran for this node (at its
    # first promotion to ready); NULL: not yet, so the next promotion runs it.
    _ts("default_pool_provisioned_at", nullable=True),
    sa.Index(
        "uq_nodes_live_name",
        "name_lower",
        unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    ),
)

node_observed = sa.Table(
    "node_observed",
    metadata,
    sa.Column(
        "node_id", sa.String(36), sa.ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("agent_version", sa.String(64), nullable=True),
    sa.Column("capabilities", JSONType, nullable=False),
    sa.Column("resources", JSONType, nullable=False),
    _ts("updated_at"),
)

#: 0006: a small, bounded log of what the control plane did or declined to do
#: for a node (e.g. a default pool not provisioned over a held path); the store
#: keeps the newest ``store.events.EVENTS_KEPT`` per node.
node_events = sa.Table(
    "node_events",
    metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column(
        "node_id",
        sa.String(36),
        sa.ForeignKey("nodes.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("type", sa.String(16), nullable=False),  # normal | warning
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("details", JSONType, nullable=False),
    _ts("created_at"),
    sa.Index("ix_node_events_node_id_seq", "node_id", "seq"),
)

join_tokens = sa.Table(
    "join_tokens",
    metadata,
    _id(),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(12), nullable=False),
    sa.Column("description", sa.String(255), nullable=False, server_default=""),
    sa.Column("created_by", sa.String(36), nullable=True),
    sa.Column("max_uses", sa.Integer, nullable=True),
    sa.Column("uses", sa.Integer, nullable=False, server_default="0"),
    _ts("created_at"),
    _ts("expires_at", nullable=True),
)

#: A node's one-time re-enrol token (``otherix node reset-credentials``): at most
#: one per node (a newer one replaces it), stored as its sha256 like join tokens.
node_rejoin_tokens = sa.Table(
    "node_rejoin_tokens",
    metadata,
    sa.Column(
        "node_id", sa.String(36), sa.ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(12), nullable=False),
    sa.Column("created_by", sa.String(36), nullable=True),
    _ts("created_at"),
    _ts("expires_at"),
    _ts("used_at", nullable=True),
)

storage_pools = sa.Table(
    "storage_pools",
    metadata,
    _id(),
    sa.Column("node_id", sa.String(36), sa.ForeignKey("nodes.id"), nullable=False, index=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("name_lower", sa.String(255), nullable=False, index=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("path", sa.String(1024), nullable=False),
    sa.Column("config", JSONType, nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    # 0011: a cordoned instance is skipped by placement (otherix pool cordon)
    sa.Column("cordoned", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("node_id", "name_lower", name="uq_storage_pools_node_name"),
    sa.Index("ix_storage_pools_created_id", "created_at", "id"),
)

pool_status = sa.Table(
    "pool_status",
    metadata,
    sa.Column(
        "pool_id",
        sa.String(36),
        sa.ForeignKey("storage_pools.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("reconciliation_status", sa.String(16), nullable=False),
    sa.Column("reconciliation_error", sa.Text, nullable=True),
    _ts("last_reconciled_at", nullable=True),
    sa.Column("capacity_bytes", sa.BigInteger, nullable=True),
    sa.Column("available_bytes", sa.BigInteger, nullable=True),
    _ts("reported_at", nullable=True),
    _ts("pressure_since", nullable=True),
    sa.Column("pressure_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("images", JSONType, nullable=False),
    # 0007 (pool identity): why the pool failed (machine-readable, docs/error-codes.md), and
    # its identity marker: the id the control plane chose for it, and whether the
    # agent may create it (create), adopt a pre-marker directory (adopt) or must
    # find it (verify, set when the agent reports the pool ready with that marker).
    sa.Column("reconciliation_reason", sa.String(64), nullable=True),
    sa.Column("identity_mode", sa.String(16), nullable=False, server_default="create"),
    sa.Column("marker_id", sa.String(36), nullable=True),
    # 0010 (capacity in parts, issue 16): what the pool's vms/, images/ and scratch/ hold,
    # as the agent last reported it ({vm_disk_bytes, vm_provisioned_bytes,
    # image_cache_bytes, scratch_bytes}); null until an agent that measures reports it.
    sa.Column("usage", JSONType, nullable=True),
    # 0011: the agent's last report of its cache scrub (progress, last completed, the
    # entries it quarantined); null until an agent that scrubs reports one.
    sa.Column("scrub", JSONType, nullable=True),
    # 0012: the agent's last drift report (what the pool holds that nobody owns: orphans
    # in vms/, strays in images/ and scratch/); null until an agent that scans sends one.
    sa.Column("drift", JSONType, nullable=True),
)

# -- 0013 (time to full, issue 16.6) ------------------------------------------------------
#: One sample of a pool instance's used bytes per ``capacity.sample_interval``, keyed on
#: (pool, bucket start) so a sample taken by two replicas for one bucket is stored once;
#: deleted with the pool, and by the sampler once older than ``capacity.retention``.
#: ``used_bytes`` is the filesystem's capacity - available (``domain/capacity.py``); the
#: parts are the agent's usage report at the time (null when it had none).
pool_capacity_samples = sa.Table(
    "pool_capacity_samples",
    metadata,
    sa.Column(
        "pool_id",
        sa.String(36),
        sa.ForeignKey("storage_pools.id", ondelete="CASCADE"),
        nullable=False,
    ),
    _ts("sampled_at"),
    sa.Column("used_bytes", sa.BigInteger, nullable=False),
    sa.Column("capacity_bytes", sa.BigInteger, nullable=False),
    sa.Column("vm_disk_bytes", sa.BigInteger, nullable=True),
    sa.Column("image_cache_bytes", sa.BigInteger, nullable=True),
    sa.PrimaryKeyConstraint("pool_id", "sampled_at"),
    sa.Index("ix_pool_capacity_samples_sampled_at", "sampled_at"),
)
# -- end 0013 ----------------------------------------------------------------------------

tasks = sa.Table(
    "tasks",
    metadata,
    _id(),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("progress", sa.Integer, nullable=False, server_default="0"),
    sa.Column("resource_type", sa.String(32), nullable=True),
    sa.Column("resource_id", sa.String(36), nullable=True),
    sa.Column("node_id", sa.String(36), nullable=True, index=True),
    sa.Column("args", JSONType, nullable=False),
    sa.Column("result", JSONType, nullable=True),
    sa.Column("error", JSONType, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer, nullable=False, server_default="25"),
    sa.Column("created_by", sa.String(36), nullable=True),
    _ts("created_at"),
    _ts("started_at", nullable=True),
    _ts("finished_at", nullable=True),
    sa.Index("ix_tasks_created_id", "created_at", "id"),
)

vms = sa.Table(
    "vms",
    metadata,
    _id(),
    sa.Column("name", sa.String(253), nullable=False),
    sa.Column("name_lower", sa.String(253), nullable=False, unique=True),
    sa.Column("owner_id", sa.String(36), sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("spec", JSONType, nullable=False),
    sa.Column("node_id", sa.String(36), sa.ForeignKey("nodes.id"), nullable=True, index=True),
    sa.Column("phase", sa.String(16), nullable=False, index=True),
    sa.Column("reason", sa.String(64), nullable=True),
    sa.Column("message", sa.Text, nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
    # 0002: the requested pool (name or instance UUID, or the substituted cluster
    # default) for list filters; placement details; the VM's current task.
    sa.Column("pool_ref", sa.String(255), nullable=True),
    sa.Column("status_details", JSONType, nullable=True),
    sa.Column("task_id", sa.String(36), nullable=True),
    sa.Index("ix_vms_created_id", "created_at", "id"),
)

vm_disks = sa.Table(
    "vm_disks",
    metadata,
    _id(),
    sa.Column(
        "vm_id",
        sa.String(36),
        sa.ForeignKey("vms.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column(
        "storage_pool_id",
        sa.String(36),
        sa.ForeignKey("storage_pools.id", ondelete="RESTRICT"),
        nullable=False,
        index=True,
    ),
    sa.Column("device_order", sa.Integer, nullable=False, server_default="0"),
    sa.Column("size_gib", sa.Integer, nullable=False),
    sa.Column("format", sa.String(8), nullable=False),
    sa.Column("file_path", sa.String(2048), nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
    # 0002: what the agent reported when it made the disk (vm.create result).
    sa.Column("virtual_size_bytes", sa.BigInteger, nullable=True),
    sa.Column("actual_size_bytes", sa.BigInteger, nullable=True),
    sa.Column("image_sha256", sa.String(64), nullable=True),
    # 0007 (pool identity): since when the agent reports the disk file missing (null: present).
    _ts("missing_since", nullable=True),
    # 0014 (vm move): the pool instance a move is copying the disk into (null: none under
    # way); RESTRICT, so neither end of a running move can be deleted.
    sa.Column(
        "move_pool_id",
        sa.String(36),
        sa.ForeignKey("storage_pools.id", ondelete="RESTRICT"),
        nullable=True,
        index=True,
    ),
)

#: 0009 (VMs run): what the VM's node last reported of its QEMU (``HeartbeatReport.vms``,
#: ``models.heartbeat.VmObservation``): one row per VM the agent knows, replaced when the
#: report changes, removed with the VM. ``state`` is a column of its own for the list.
vm_runtime = sa.Table(
    "vm_runtime",
    metadata,
    sa.Column(
        "vm_id", sa.String(36), sa.ForeignKey("vms.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("observed", JSONType, nullable=False),
    _ts("observed_at"),
)

"""Migration 0002 (VM placement columns) is in step with ``store/schema.py``,
and goes down and up again, on every backend."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from otherix.store.migrate import alembic_config, current_revision, upgrade
from otherix.store.schema import metadata


def test_migrations_match_the_schema_module_and_0002_round_trips(fresh_db):
    upgrade(fresh_db)
    with fresh_db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    command.downgrade(alembic_config(fresh_db), "0001")
    assert current_revision(fresh_db) == "0001"
    columns = {c["name"] for c in sa.inspect(fresh_db.engine).get_columns("vm_disks")}
    assert "virtual_size_bytes" not in columns
    upgrade(fresh_db, "0002")  # later migrations have tests of their own
    assert current_revision(fresh_db) == "0002"
    columns = {c["name"] for c in sa.inspect(fresh_db.engine).get_columns("vms")}
    assert {"pool_ref", "status_details", "task_id"} <= columns

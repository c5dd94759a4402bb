"""Migration 0002 (VM placement columns) is in step with ``store/schema.py``,
and goes down and up again, on every backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from otherix.store import Database
from otherix.store.migrate import alembic_config, current_revision, upgrade
from otherix.store.schema import metadata
from support import pg


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_db(request, tmp_path) -> Iterator[Database]:
    """An empty database of its own (never the session's shared one)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/fresh.db"
    else:
        if not pg.base_url():
            pytest.skip(f"{pg.ENV} not set")
        url = pg.create_database()
    db = Database(url)
    try:
        yield db
    finally:
        db.close()
        if request.param == "postgresql":
            pg.drop_database(url)


def test_migrations_match_the_schema_module_and_0002_round_trips(fresh_db):
    upgrade(fresh_db)
    with fresh_db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    command.downgrade(alembic_config(fresh_db), "0001")
    assert current_revision(fresh_db) == "0001"
    columns = {c["name"] for c in sa.inspect(fresh_db.engine).get_columns("vm_disks")}
    assert "virtual_size_bytes" not in columns
    upgrade(fresh_db, "0002")  # later revisions (0003_...) follow it
    assert current_revision(fresh_db) == "0002"
    columns = {c["name"] for c in sa.inspect(fresh_db.engine).get_columns("vms")}
    assert {"pool_ref", "status_details", "task_id"} <= columns

"""Alembic environment: uses the engine handed over by ``otherix.store.migrate``.

On SQLite, foreign keys are switched off while migrations run and checked
once at the end (``PRAGMA foreign_key_check``), as Alembic's batch mode needs:
it rebuilds a table by copying it into a new one and dropping the old, and
with foreign keys on, dropping a table that other rows reference fails (a
downgrade of ``users`` with live VMs, say). The switch must happen outside a
transaction (SQLite ignores it inside one), so it goes through the driver
connection before SQLAlchemy begins, and is switched back on before the
pooled connection is handed back.
"""

from __future__ import annotations

from alembic import context

from otherix.store.schema import metadata

engine = context.config.attributes["engine"]


def _set_foreign_keys(connection: object, on: bool) -> None:
    raw = connection.connection.driver_connection  # type: ignore[attr-defined]
    raw.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        _set_foreign_keys(connection, False)
    try:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=True,
            transaction_per_migration=True,
            # a fault-test pause inside each migration's transaction (store/migrate.py)
            on_version_apply=context.config.attributes.get("on_version_apply"),
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            connection.commit()
            if broken:
                raise RuntimeError(f"migration left rows with dangling foreign keys: {broken[:5]}")
    finally:
        if sqlite:
            _set_foreign_keys(connection, True)

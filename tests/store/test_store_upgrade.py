"""Upgrade from the last released schema (0011, before issue 16's migrations) to head,
with a row in every table, on each backend (issue 17.4).

The tables and columns come from the database itself at 0011 (reflected), never
from a list in this file, so a table added before 0011 is never forgotten. Each
column gets a value of its type (foreign keys the referenced row's); after the
upgrade every row is read again and every column that existed at 0011 must hold
the value it held before.
"""

from __future__ import annotations

import threading

from otherix.store import Database
from otherix.store.migrate import current_revision, migration_lock, pending, upgrade
from support.schemafill import PREVIOUS, populate, read_all


def test_upgrade_from_the_previous_schema_keeps_every_row(fresh_db: Database) -> None:
    upgrade(fresh_db, PREVIOUS)
    meta, inserted = populate(fresh_db.engine)
    tables = {t.name for t in meta.sorted_tables} - {"alembic_version"}
    assert set(inserted) == tables  # a row in every table of that revision
    assert {"nodes", "storage_pools", "pool_status", "vms", "vm_disks", "tasks", "users"} <= tables
    before = read_all(fresh_db.engine)
    assert all(len(rows) == 1 for rows in before.values())

    expected = pending(fresh_db)
    ran = upgrade(fresh_db)

    assert ran == expected
    assert ran[0].revision == "0012"
    assert current_revision(fresh_db) == ran[-1].revision
    assert pending(fresh_db) == []
    after = read_all(fresh_db.engine)
    for name, rows in before.items():
        assert name in after, f"table {name} vanished in the upgrade"
        assert len(after[name]) == 1, name
        kept = {k: after[name][0][k] for k in rows[0]}
        assert kept == rows[0], name


def test_a_second_migrator_waits_for_the_first_to_finish(fresh_db: Database) -> None:
    """The migration lock: a second Database on the same store (as a second replica)
    does not get it while the first holds it, and gets it once released."""
    other = Database(fresh_db.url)
    got = threading.Event()

    def second() -> None:
        with migration_lock(other):
            got.set()

    try:
        with migration_lock(fresh_db):
            waiter = threading.Thread(target=second)
            waiter.start()
            assert not got.wait(0.5)  # blocked while the first holds it
        waiter.join(timeout=30)
        assert got.is_set()
    finally:
        other.close()

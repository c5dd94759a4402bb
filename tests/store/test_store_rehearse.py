"""``Database.rehearse()``: the dry-run transaction (both backends).

It must decide as :meth:`Database.write` would (same constraints, same locks) and
keep nothing, whether its block ends normally or by an exception."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from otherix.store import Database, UniqueViolation
from otherix.store.schema import cluster_settings
from otherix.store.settings import store as qs
from otherix.store.tx import sql

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_rehearsal_sees_its_own_writes_and_keeps_none(db: Database) -> None:
    with db.rehearse() as tx:
        qs.put_setting(tx, "rehearsed", "v", T0)
        assert qs.get_setting(tx, "rehearsed") == "v"
    with db.read() as tx:
        assert not qs.has_setting(tx, "rehearsed")


def test_a_rehearsal_meets_the_constraints_a_write_meets(db: Database) -> None:
    with db.write() as tx:
        qs.put_setting(tx, "taken", "v", T0)
    with pytest.raises(UniqueViolation), db.rehearse() as tx:
        sql(tx).execute(cluster_settings.insert().values(key="taken", value="w", updated_at=T0))
    with db.read() as tx:
        assert qs.get_setting(tx, "taken") == "v"


def test_a_rehearsal_ended_by_an_exception_keeps_nothing(db: Database) -> None:
    def write_then_fail() -> None:
        with db.rehearse() as tx:
            qs.put_setting(tx, "boom", "v", T0)
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        write_then_fail()
    with db.read() as tx:
        assert not qs.has_setting(tx, "boom")
    with db.write() as tx:  # the write lock was released
        qs.put_setting(tx, "after", "v", T0)
    with db.read() as tx:
        assert qs.get_setting(tx, "after") == "v"

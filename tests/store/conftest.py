"""Fixtures of the store tests: ``db``, a migrated database on each backend
(``db_url`` of ``tests/conftest.py``: SQLite always, PostgreSQL when
``OTHERIX_TEST_POSTGRES_URL`` is set)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from otherix.store import Database
from otherix.store.migrate import upgrade


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    upgrade(database)
    try:
        yield database
    finally:
        database.close()

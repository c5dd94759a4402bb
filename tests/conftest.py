"""Shared fixtures: a real API server (SQLite by default), users of every role,
the PostgreSQL switch (``OTHERIX_TEST_POSTGRES_URL``) and the bootable test guest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from otherix.store import Database
from otherix.store.migrate import upgrade
from support import guest, pg
from support.factories import Api, with_roles
from support.server import ApiServer, make_settings

# the ``reliability`` fixture and the "reliability figures" summary (README's Reliability section)
pytest_plugins = ["support.reliability"]


@pytest.fixture
def api(tmp_path) -> Iterator[Api]:
    """A running control plane on SQLite with one user per role."""
    server = ApiServer(make_settings(tmp_path / "api")).start()
    try:
        yield with_roles(server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    if not pg.base_url():
        pytest.skip(f"{pg.ENV} not set")
    url = pg.create_database()
    db = Database(url)
    upgrade(db)
    db.close()
    try:
        yield url
    finally:
        pg.drop_database(url)


@pytest.fixture(scope="session")
def test_guest(request, tmp_path_factory) -> Path:
    """The test guest's qcow2 (``support.guest``), built once and kept in pytest's cache
    dir: read-only, boot a copy. Skips, naming them, if build prerequisites are missing."""
    missing = guest.missing_prerequisites()
    if missing:
        pytest.skip(f"the test guest cannot be built: missing {', '.join(missing)}")
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    folder = cache.mkdir("otherix-guest") if cache else tmp_path_factory.mktemp("guest")
    return guest.build_guest(folder)


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path) -> str:
    """A migrated-on-open database URL, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/otherix.db"
    url = request.getfixturevalue("pg_database")
    pg.truncate_all(url)
    return url


@pytest.fixture(params=BACKENDS)
def fresh_db(request, tmp_path) -> Iterator[Database]:
    """An empty, unmigrated database of its own on each backend (never the
    session's shared PostgreSQL database): for migration tests."""
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


@pytest.fixture
def api_any_backend(tmp_path, db_url) -> Iterator[Api]:
    """A running control plane on each backend in turn."""
    server = ApiServer(make_settings(tmp_path / "api", db_url)).start()
    try:
        yield with_roles(server)
    finally:
        server.stop()


# the folders that are slow tier as a whole (tests/README.md): the real programs as
# processes (e2e), injected faults, fuzzing campaigns
_SLOW_FOLDERS = ("e2e", "faults", "fuzz")


def pytest_collection_modifyitems(config, items):
    """The tiers (tests/README.md): every test in a slow folder is slow tier, whatever
    its module says; any other slow test carries ``@pytest.mark.slow`` itself."""
    tests = config.rootpath / "tests"
    for item in items:
        parts = item.path.relative_to(tests).parts if item.path.is_relative_to(tests) else ()
        if parts and parts[0] in _SLOW_FOLDERS:
            item.add_marker(pytest.mark.slow)

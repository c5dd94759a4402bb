"""Fixtures for the VM suites: a module-scoped server for the request tables
(one real server per module instead of one per case); the per-test ``api`` and
``api_any_backend`` servers come from tests/conftest.py."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from support.factories import Api, with_roles
from support.server import ApiServer, make_settings


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory) -> Iterator[Api]:
    """One SQLite server for a whole module; tests must use unique names."""
    server = ApiServer(make_settings(tmp_path_factory.mktemp("vms-shared"))).start()
    try:
        yield with_roles(server)
    finally:
        server.stop()


@pytest.fixture
def px(request) -> str:
    """A prefix unique to the test, for names on a module-shared server."""
    return "t" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]

"""Fixtures for the VM suites: a module-scoped server for the request tables
(one real server per module instead of one per case); the per-test ``api`` and
``api_any_backend`` servers come from tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from otherix.rbac import Role
from support.server import ADMIN, ApiServer, make_settings

PASSWORD = "role-password-1"


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """One SQLite server for a whole module; tests must use unique names."""
    from otherix.api.services.users import ensure_bootstrap_admin

    server = ApiServer(make_settings(tmp_path_factory.mktemp("vms-shared"))).start()
    try:
        ensure_bootstrap_admin(server.deps, *ADMIN)
        tokens = {"admin": server.login(*ADMIN)}
        for role in (Role.OPERATOR, Role.DEVELOPER, Role.VIEWER):
            server.add_user(str(role), PASSWORD, role)
            tokens[str(role)] = server.login(str(role), PASSWORD)
        yield SimpleNamespace(
            server=server,
            tokens=tokens,
            url=server.url,
            client=lambda role="admin": server.client(tokens[role] if role else None),
        )
    finally:
        server.stop()

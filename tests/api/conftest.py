"""Fixtures for the API suites: puts ``apihelpers`` on the import path and
offers a module-scoped server for the parametrized tables (one real server per
module instead of one per case). Cheap argon2 comes from ``tests/conftest.py``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from apihelpers import Api, serve


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory) -> Iterator[Api]:
    """One SQLite server for a whole module; tests must use unique names."""
    with serve(tmp_path_factory.mktemp("shared-api")) as api:
        yield api

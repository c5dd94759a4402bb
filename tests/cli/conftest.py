"""CLI suite fixtures: ``cli`` runs ``otherix`` in-process against the real API."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from clihelpers import Cli


@pytest.fixture
def cli(api, tmp_path) -> Cli:
    """``cli(*args, role="admin", tty=False, input=None)`` -> click Result."""
    home = tmp_path / "home"
    home.mkdir()
    return Cli(url=api.url, tokens=api.tokens, home=home)


@pytest.fixture
def offline_cli(tmp_path) -> Cli:
    """A ``Cli`` whose endpoint refuses connections: for checks made before any request."""
    home = tmp_path / "home"
    home.mkdir()
    return Cli(url="http://127.0.0.1:1", tokens={"admin": "t"}, home=home)

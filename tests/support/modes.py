"""File-mode helpers for the tests that check exact modes on disk.

``strict_umask`` is a fixture (use it with ``@pytest.mark.usefixtures`` or import
it into a module); ``mode_of`` reads a path's permission bits.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["mode_of", "strict_umask"]


@pytest.fixture
def strict_umask() -> Iterator[None]:
    """A umask (0o077) that would strip group bits, to prove modes are umask-independent."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    """The permission bits of ``path`` (following a symlink)."""
    return stat.S_IMODE(path.stat().st_mode)

"""Fixtures for the security suite: puts ``securityhelpers`` on the import path.

Everything in this folder carries the ``security`` marker (``pytestmark`` in
each module), so ``pytest -m security`` selects it together with the marked
tests elsewhere (RBAC walk, auth, node credentials, SSRF, agent path checks).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

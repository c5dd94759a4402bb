"""The fuzz suites: puts ``fuzzcampaign`` and ``fuzzhelpers`` on the import path."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

"""Run the real ``otherix`` console script as a user would (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

OTHERIX = str(Path(sys.executable).with_name("otherix"))


def cli_env(url: str, token: str, config_dir: Path) -> dict[str, str]:
    """Environment pointing the CLI at ``url`` with ``token`` and a private config file."""
    return {
        **os.environ,
        "OTHERIX_SERVER": url,
        "OTHERIX_API_TOKEN": token,
        "OTHERIX_CONFIG": str(config_dir / "cli-config"),
    }


def run(
    env: Mapping[str, str], *args: str, ok: bool = True, code: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``otherix ARGS``; assert exit 0 (``ok``) or exit 1 (an error, as the CLI reports
    one), or exactly ``code`` when given (2: a usage error)."""
    r = subprocess.run(
        [OTHERIX, *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    expected = code if code is not None else 0 if ok else 1
    assert r.returncode == expected, (
        f"otherix {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    )
    return r

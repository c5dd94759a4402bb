"""The installed ``otherix`` console script, run as a user would, as a subprocess."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from otherix.cli.config import CliConfig, ClusterEntry, save_config
from support.server import ADMIN


def otherix_script() -> str:
    beside = Path(sys.executable).parent / "otherix"
    found = str(beside) if beside.exists() else shutil.which("otherix")
    if not found:
        pytest.skip("the otherix console script is not installed")
    return found


def run(
    *args: str, home: Path, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", ""), **(env or {})}
    return subprocess.run(
        [otherix_script(), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_config_add_cluster_then_user_list(api, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    login, password = ADMIN
    added = run(
        "config", "add", "cluster", "--name", "dev", "--server", api.url,
        "--login", login, "--password", password,
        home=home,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert (
        added.stdout == f'cluster "dev" added: {api.url} as admin\ncurrent cluster is now "dev"\n'
    )
    config = home / ".otherix" / "config"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    listed = run("user", "list", home=home)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["NAME", "ROLE", "AGE"]
    assert {(r[0], r[1]) for r in rows[1:]} >= {("admin", "admin"), ("viewer", "viewer")}
    assert listed.stderr == ""


def test_errors_exit_1_with_one_line_on_stderr(tmp_path):
    result = run("--endpoint", "http://127.0.0.1:1", "--token", "t", "pool", "list", home=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "Error: cannot connect to the control plane at http://127.0.0.1:1: connection refused\n"
    )


def test_shell_completion_callback(tmp_path):
    env = {"_OTHERIX_COMPLETE": "bash_complete", "COMP_WORDS": "otherix pool de", "COMP_CWORD": "2"}
    result = run(home=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["plain,delete"]


def test_a_closed_pipe_is_quiet(tmp_path):
    # Far more output than a pipe buffer holds, read by a consumer that stops early.
    config = tmp_path / "config"
    clusters = [ClusterEntry(f"c{i}", "http://127.0.0.1:1", "x") for i in range(4000)]
    save_config(config, CliConfig("c0", clusters))
    result = subprocess.run(
        f"'{otherix_script()}' --config '{config}' config list | head -n 2",
        shell=True,
        env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.splitlines()[0].split() == ["NAME", "SERVER", "CURRENT"]
    assert result.stderr == ""

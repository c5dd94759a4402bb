"""A misspelt ``OTHERIX_`` variable stops each of the three console scripts at
start with the closest known key; the programs' own variables (and another
program's settings) never do.

Real processes: ``otherix-api serve`` on a free port, ``otherix-agent
bootstrap``/``serve`` against the real control plane of the ``api`` fixture
(pool directories under the test's temp dir via ``storage.host_root``), and
the ``otherix`` CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from support.server import free_port

BIN = Path(sys.executable).parent
TYPO = "OTHERIX_SERVR__LISTEN"
SUGGESTION = f"{TYPO}: unknown setting; did you mean OTHERIX_SERVER__LISTEN?\n"


def base_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}


def run(env, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / cmd[0]), *cmd[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


def test_a_misspelt_variable_stops_each_program_with_the_closest_key(tmp_path):
    env = {**base_env(tmp_path), TYPO: "127.0.0.1:9999"}
    port = free_port()
    api = run(env, "otherix-api", "serve", "--data-dir", str(tmp_path / "api"),
              "--listen", f"127.0.0.1:{port}")  # fmt: skip
    assert api.returncode == 1, api.stderr
    assert api.stderr.endswith(f"Error: {SUGGESTION}")
    assert not (tmp_path / "api").exists()  # stopped before it touched its data
    agent = run(env, "otherix-agent", "serve", "--data-dir", str(tmp_path / "agent"))
    assert agent.returncode == 1, agent.stderr
    assert agent.stderr == f"error: {SUGGESTION}"
    cli = run(env, "otherix", "--endpoint", "http://127.0.0.1:1", "--token", "t", "pool", "list")
    assert cli.returncode == 1, cli.stderr
    assert cli.stderr == f"Error: {SUGGESTION}"  # before any request (nothing listens there)
    migrate = run(env, "otherix-api", "migrate", "--data-dir", str(tmp_path / "api"))
    assert (migrate.returncode, migrate.stderr.endswith(f"Error: {SUGGESTION}")) == (1, True)
    # a variable that is nobody's at all
    odd = run({**base_env(tmp_path), "OTHERIX_FOO": "1"}, "otherix", "config", "list")
    assert odd.returncode == 1
    assert odd.stderr.startswith("Error: OTHERIX_FOO: unknown setting")


def friends(api_url: str, token: str, join_token: str, tmp_path: Path) -> dict[str, str]:
    """Every program variable of PROGRAM_ENV_VARS, with a value that works."""
    from otherix.config import PROGRAM_ENV_VARS

    values = {
        "OTHERIX_SERVER": api_url,
        "OTHERIX_API_TOKEN": token,
        "OTHERIX_CONFIG": str(tmp_path / "cli-config"),
        "OTHERIX_LOGIN": "admin",
        "OTHERIX_PASSWORD": "not-used-here",
        "OTHERIX_NEW_PASSWORD": "not-used-here",
        "OTHERIX_BOOTSTRAP_ADMIN_USERNAME": "boot",
        "OTHERIX_BOOTSTRAP_ADMIN_PASSWORD": "boot-pass-1",
        "OTHERIX_JOIN_TOKEN": join_token,
        "OTHERIX_REJOIN_TOKEN": "otxr_not-used-here",
        "OTHERIX_TEST_POSTGRES_URL": "postgresql+psycopg://nobody@/nowhere",
        "OTHERIX_TEST_WORKERS": "0",
        "OTHERIX_FAULT_SEED": "1",
        "OTHERIX_BENCH_NODES": str(tmp_path / "nodes"),
        "OTHERIX_FLOOD_MODE": "one",
        "OTHERIX_FLOOD_DELAY_MS": "0",
    }
    assert set(values) == set(PROGRAM_ENV_VARS)
    return values


@pytest.mark.slow
def test_the_programs_own_variables_and_each_others_settings_never_stop_a_start(api, tmp_path):
    with api.client("admin") as c:
        join_token = c.post("/v1/nodes/join-tokens", json={}).json()["token"]
    pools_prefix = f"{api.server.settings.data_dir}/pools/"
    env = {
        **base_env(tmp_path),
        **friends(api.url, api.tokens["admin"], join_token, tmp_path),
        # each program's settings in one shared environment
        "OTHERIX_AGENTS__WATCH_TIMEOUT": "20s",  # the API's
        "OTHERIX_CONTROL_PLANE__WATCH_TIMEOUT": "5s",  # the agent's
        "OTHERIX_STORAGE__ALLOWED_PATH_PREFIXES": json.dumps([pools_prefix]),
        "OTHERIX_STORAGE__HOST_ROOT": str(tmp_path / "host"),
    }
    (tmp_path / "host").mkdir()

    # the CLI
    listed = run(env, "otherix", "pool", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("NAME  NODE  TYPE")

    # otherix-api serve: up, healthy, drained on SIGTERM
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "otherix-api"), "serve", "--data-dir", str(tmp_path / "api"),
         "--listen", f"127.0.0.1:{port}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for(
            lambda: _healthy(f"http://127.0.0.1:{port}") or proc.poll() is not None,
            60,
            "otherix-api to answer /healthz",
        )
        assert proc.poll() is None, proc.communicate()[0]
    finally:
        code, out = stop(proc)
    assert code == 0, out

    # otherix-agent: bootstrap with OTHERIX_JOIN_TOKEN, then serve until the node is ready
    # (without OTHERIX_REJOIN_TOKEN: bootstrap takes one of the two tokens, and the
    # other variable is a token too, refused as a second one, not as unknown)
    data = tmp_path / "agent"
    join_env = {k: v for k, v in env.items() if k != "OTHERIX_REJOIN_TOKEN"}
    boot = run(join_env, "otherix-agent", "bootstrap", "--server", api.url, "--node-name",
               "env-node", "--data-dir", str(data))  # fmt: skip
    assert boot.returncode == 0, boot.stderr
    agent = subprocess.Popen(
        [str(BIN / "otherix-agent"), "serve", "--data-dir", str(data)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for(
            lambda: _node_status(api, "env-node") == "ready" or agent.poll() is not None,
            60,
            "the agent's first heartbeat",
        )
        assert agent.poll() is None, agent.communicate()[0]
    finally:
        code, out = stop(agent)
    assert code == 0, out


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _node_status(api, name: str) -> str | None:
    with api.client("admin") as c:
        r = c.get(f"/v1/nodes/{name}")
    return r.json()["status"] if r.status_code == 200 else None

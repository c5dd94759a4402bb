"""The console scripts as a user runs them: ``otherix-api quickstart`` brings up
a ready single-node cluster, the CLI works against it, Ctrl-C stops both
processes, a second run reuses the data; ``otherix-api serve`` drains on
SIGTERM and exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from support.server import free_port

BIN = Path(sys.executable).parent


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def _otherix(env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "otherix"), *args], env=env, capture_output=True, text=True, timeout=30
    )


def _quickstart(tmp_path: Path, port: int, env) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            str(BIN / "otherix-api"),
            "quickstart",
            "--data-dir",
            str(tmp_path / "data"),
            "--listen",
            f"127.0.0.1:{port}",
            "--node-name",
            "qs-node",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> str:
    os.killpg(proc.pid, sig)  # as a terminal's Ctrl-C reaches the whole group
    out, _ = proc.communicate(timeout=60)
    return out


@pytest.mark.slow
def test_quickstart_gives_a_ready_cluster_and_reruns_on_the_same_data(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    pools = tmp_path / "pools"
    env = {
        **os.environ,
        "HOME": str(home),
        "OTHERIX_STORAGE_POOLS__ALLOWED_PATH_PREFIXES": f'["{pools}/"]',
    }
    env.pop("OTHERIX_SERVER", None)
    env.pop("OTHERIX_API_TOKEN", None)
    port = free_port()
    proc = _quickstart(tmp_path, port, env)
    try:
        listing = _wait(
            lambda: (
                (r := _otherix(env, "node", "list")).returncode == 0
                and " ready " in r.stdout
                and r.stdout
            ),
            60,
            "the node to be ready",
        )
        assert "qs-node" in listing
        pools_out = _wait(
            lambda: (
                (r := _otherix(env, "pool", "list")).returncode == 0
                and "ready" in r.stdout
                and r.stdout
            ),
            30,
            "the default pool to be ready",
        )
        header, row = pools_out.splitlines()[:2]
        assert header.split() == [
            "NAME",
            "NODE",
            "TYPE",
            "PATH",
            "AVAILABLE",
            "STATUS",
            "DEFAULT",
            "AGE",
        ]
        assert row.split()[:3] == ["default", "qs-node", "local_dir"]
        assert "yes" in row.split()
        assert (pools / "default" / "images").is_dir()
        assert (home / ".otherix" / "config").stat().st_mode & 0o777 == 0o600
    finally:
        out = _stop(proc)
    assert "Admin user: admin   password:" in out
    assert proc.returncode == 0, out
    assert _otherix(env, "node", "list").returncode != 0  # both processes are gone

    proc = _quickstart(tmp_path, port, env)
    try:
        _wait(
            lambda: (r := _otherix(env, "node", "list")).returncode == 0 and " ready " in r.stdout,
            60,
            "the node to be ready again",
        )
        r = _otherix(env, "pool", "list", "-o", "json")
        assert [p["name"] for p in __import__("json").loads(r.stdout)["data"]] == ["default"]
    finally:
        out = _stop(proc, signal.SIGTERM)
    assert "password:" not in out  # shown once, on the first run only
    assert proc.returncode == 0, out


@pytest.mark.slow
def test_serve_drains_on_sigterm_answers_watches_and_exits_zero(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "OTHERIX_BOOTSTRAP_ADMIN_USERNAME": "admin",
        "OTHERIX_BOOTSTRAP_ADMIN_PASSWORD": "admin-password-1",
    }
    proc = subprocess.Popen(
        [
            str(BIN / "otherix-api"),
            "serve",
            "--data-dir",
            str(tmp_path),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _healthy(url), 30, "the server to start")
        token = httpx.post(
            f"{url}/v1/auth/login", json={"username": "admin", "password": "admin-password-1"}
        ).json()["access_token"]
        admin = {"Authorization": f"Bearer {token}"}
        join = httpx.post(f"{url}/v1/nodes/join-tokens", json={}, headers=admin).json()["token"]
        cred = httpx.post(f"{url}/v1/nodes/join", json={"join_token": join, "name": "n1"}).json()[
            "credential"
        ]
        answers: list[httpx.Response] = []

        def long_poll() -> None:
            answers.append(
                httpx.get(
                    f"{url}/v1/nodes/n1/watch",
                    params={"revision": 99, "timeout": 60},
                    headers={"Authorization": f"Bearer {cred}"},
                    timeout=90,
                )
            )

        watcher = threading.Thread(target=long_poll)
        watcher.start()
        time.sleep(0.5)  # the watch is parked on the server
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        watcher.join(timeout=30)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 10  # the 60 s watch did not hold the shutdown
        assert answers
        assert answers[0].status_code == 200
        assert answers[0].json()["changed"] is False
    finally:
        if proc.poll() is None:
            proc.kill()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False

"""``otherix-api backup`` and ``restore`` as an operator runs them (issue 17.3), next to
a real ``otherix-api serve`` process: the backup is taken while it serves, a restore
is refused while it runs (its data-directory lock is held by another process), and
once it is stopped the restore puts the backup back: the user created before the
backup is there, the one created after is not. (Slow tier, as all of e2e: four
processes; the checks themselves are tests/api/test_api_backup.py.)"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from support.server import free_port

BIN = Path(sys.executable).parent
ADMIN = {"username": "admin", "password": "admin-password-1"}


def _api(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "otherix-api"), *args], capture_output=True, text=True, timeout=60
    )


def _serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "OTHERIX_BOOTSTRAP_ADMIN_USERNAME": ADMIN["username"],
        "OTHERIX_BOOTSTRAP_ADMIN_PASSWORD": ADMIN["password"],
        # argon2id at minimal cost, as every test server (support.server.CHEAP_PASSWORD_HASHING)
        "OTHERIX_AUTH__PASSWORD_HASH_TIME_COST": "1",
        "OTHERIX_AUTH__PASSWORD_HASH_MEMORY_KIB": "64",
        "OTHERIX_AUTH__PASSWORD_HASH_PARALLELISM": "1",
    }
    args = ["serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(
        [str(BIN / "otherix-api"), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, "serve exited at start"
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("serve did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def _create_user(port: int, name: str) -> None:
    url = f"http://127.0.0.1:{port}"
    token = httpx.post(f"{url}/v1/auth/login", json=ADMIN).json()["access_token"]
    body = {"username": name, "password": "password-1", "role": "viewer"}
    r = httpx.post(f"{url}/v1/users", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text


def test_backup_while_serving_and_restore_once_stopped(tmp_path):
    data_dir, archive, port = tmp_path / "api", tmp_path / "otherix.tar", free_port()
    proc = _serve(data_dir, port)
    try:
        _create_user(port, "before-backup")
        done = _api("backup", "--data-dir", str(data_dir), "--to", str(archive))
        assert done.returncode == 0, done.stderr
        assert f"backup written to {archive}" in done.stderr
        _create_user(port, "after-backup")
        refused = _api("restore", "--data-dir", str(data_dir), "--from", str(archive), "--force")
        assert refused.returncode == 1
        assert "a control plane is running on the data directory" in refused.stderr
    finally:
        _stop(proc)
    restored = _api("restore", "--data-dir", str(data_dir), "--from", str(archive), "--force")
    assert restored.returncode == 0, restored.stderr
    conn = sqlite3.connect(data_dir / "otherix.db")
    try:
        users = {r[0] for r in conn.execute("SELECT username FROM users")}
    finally:
        conn.close()
    assert "before-backup" in users
    assert "after-backup" not in users

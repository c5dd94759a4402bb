"""``otherix-api serve`` over HTTPS (``server.tls_cert_file``/``tls_key_file``):
the CLI and an agent talk to it with the cluster's CA, and plain HTTP is not
served on that port."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from otherix.api.settings import ApiSettings
from otherix.config import ConfigError, load_config
from support import tls as support_tls
from support.server import free_port

BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.slow]


def self_signed(tmp: Path) -> tuple[Path, Path]:
    return support_tls.self_signed(
        tmp,
        "otherix-test",
        ip="127.0.0.1",
        cert_name="cp.crt",
        key_name="cp.key",
        valid_from=dt.timedelta(minutes=1),
    )


def test_tls_settings_come_in_pairs(tmp_path):
    cert, _ = self_signed(tmp_path)
    with pytest.raises(ConfigError, match="both tls_cert_file and tls_key_file"):
        load_config(ApiSettings, overrides={"server.tls_cert_file": cert})


def test_serve_over_https_with_cli_and_agent(tmp_path):
    cert, key = self_signed(tmp_path)
    ctx = ssl.create_default_context(cafile=str(cert))
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    env = {
        **os.environ,
        "OTHERIX_BOOTSTRAP_ADMIN_USERNAME": "admin",
        "OTHERIX_BOOTSTRAP_ADMIN_PASSWORD": "admin-password-1",
        "OTHERIX_SERVER__TLS_CERT_FILE": str(cert),
        "OTHERIX_SERVER__TLS_KEY_FILE": str(key),
        "OTHERIX_STORAGE_POOLS__ALLOWED_PATH_PREFIXES": f'["{tmp_path}/pools/"]',
        "OTHERIX_STORAGE__ALLOWED_PATH_PREFIXES": f'["{tmp_path}/pools/"]',
        "OTHERIX_CONTROL_PLANE__CA_FILE": str(cert),
        "SSL_CERT_FILE": str(cert),  # the CLI verifies with the default store
    }
    api = subprocess.Popen(
        [
            str(BIN / "otherix-api"),
            "serve",
            "--data-dir",
            str(tmp_path / "api"),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    agent = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", verify=ctx, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not come up over https"
            time.sleep(0.2)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).raise_for_status()
        token = httpx.post(
            f"{url}/v1/auth/login",
            json={"username": "admin", "password": "admin-password-1"},
            verify=ctx,
        ).json()["access_token"]
        join = httpx.post(
            f"{url}/v1/nodes/join-tokens",
            json={},
            headers={"Authorization": f"Bearer {token}"},
            verify=ctx,
        ).json()["token"]
        agent_dir = str(tmp_path / "agent")
        subprocess.run(
            [
                str(BIN / "otherix-agent"),
                "bootstrap",
                "--server",
                url,
                "--join-token",
                join,
                "--node-name",
                "tls-node",
                "--data-dir",
                agent_dir,
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        agent = subprocess.Popen(
            [str(BIN / "otherix-agent"), "serve", "--data-dir", agent_dir],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        cli_env = {
            **env,
            "OTHERIX_SERVER": url,
            "OTHERIX_API_TOKEN": token,
            "OTHERIX_CONFIG": str(tmp_path / "c"),
        }
        deadline = time.monotonic() + 30
        while True:
            out = subprocess.run(
                [str(BIN / "otherix"), "node", "list"], env=cli_env, capture_output=True, text=True
            )
            if out.returncode == 0 and " ready " in out.stdout:
                break
            assert time.monotonic() < deadline, out.stdout + out.stderr
            time.sleep(0.3)
        assert "tls-node" in out.stdout
    finally:
        for proc in (agent, api):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)

"""``otherix-api serve`` over HTTPS (``server.tls_cert_file``/``tls_key_file``):
the CLI and an agent talk to it with the cluster's CA, and plain HTTP is not
served on that port."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from otherix.api.settings import ApiSettings
from otherix.config import ConfigError, load_config
from support.server import free_port

BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.slow]


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "otherix-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cp.crt", tmp / "cp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


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

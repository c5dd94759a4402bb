"""A cluster's token goes only to that cluster's server (issue 13.9).

``--endpoint`` (or ``$OTHERIX_SERVER``) pointed at another server must not
hand it the config entry's token. The other server is a tiny real HTTP server
that records the ``Authorization`` header of every request it gets and
answers like an empty pool list; the cluster's own server is the real
control plane of the ``api`` fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from otherix.cli.config import CliConfig, ClusterEntry, save_config

OTHERIX = str(Path(sys.executable).parent / "otherix")


class Recorder(ThreadingHTTPServer):
    """Records (path, Authorization header or None) of every request."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        body = json.dumps({"data": [], "meta": {"next_cursor": None}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def otherix(env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OTHERIX, *args], env=env, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


@pytest.fixture
def env(api, tmp_path) -> dict[str, str]:
    """A user whose current cluster "dev" is the real control plane, with its token."""
    config = tmp_path / "config"
    save_config(config, CliConfig("dev", [ClusterEntry("dev", api.url, api.tokens["viewer"])]))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTHERIX_")}
    return {**environ, "HOME": str(tmp_path), "OTHERIX_CONFIG": str(config)}


def test_another_endpoint_never_gets_the_clusters_token(api, env, recorder):
    refused = otherix(env, "--endpoint", recorder.url, "pool", "list")
    assert refused.returncode == 1
    assert refused.stderr == (
        f'Error: not sending the token of cluster "dev" to {recorder.url}: that is not the '
        "cluster's server; pass --token (or set OTHERIX_API_TOKEN) for that server\n"
    )
    by_env = otherix({**env, "OTHERIX_SERVER": recorder.url}, "pool", "list")
    assert by_env.returncode == 1
    assert by_env.stderr == refused.stderr
    named = otherix(env, "--cluster", "dev", "--endpoint", recorder.url, "pool", "list")
    assert named.returncode == 1
    # Whatever reached the other server carried no token at all.
    assert all(auth is None for _, auth in recorder.seen)
    assert api.tokens["viewer"] not in repr(recorder.seen)


def test_an_explicit_token_goes_where_it_is_told(env, recorder):
    flag = otherix(
        env, "--endpoint", recorder.url, "--token", "otx_for-that-server", "pool", "list"
    )
    assert flag.returncode == 0, flag.stderr
    by_env = otherix(
        {**env, "OTHERIX_SERVER": recorder.url, "OTHERIX_API_TOKEN": "otx_from-env"}, "pool", "list"
    )
    assert by_env.returncode == 0, by_env.stderr
    assert recorder.seen == [
        ("/v1/storage-pools?limit=20", "Bearer otx_for-that-server"),
        ("/v1/storage-pools?limit=20", "Bearer otx_from-env"),
    ]


@pytest.mark.parametrize("spelling", ["{url}", "{url}/", "{upper}"])
def test_the_clusters_own_server_in_another_spelling_gets_its_token(api, env, spelling):
    url = spelling.format(url=api.url, upper=api.url.replace("http://", "HTTP://"))
    r = otherix(env, "--endpoint", url, "pool", "list")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("NAME  NODE  TYPE")

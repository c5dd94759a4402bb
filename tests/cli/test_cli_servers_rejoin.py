"""The CLI with several control-plane URLs (a context's ``servers:``) and
``otherix node reset-credentials``, in-process against a real server."""

from __future__ import annotations

import socket

import httpx
import yaml
from clihelpers import failed, join_node, ok, usage

from otherix.cli.config import load_config
from support.server import ADMIN


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_a_context_with_a_dead_first_server_still_works(cli, api):
    dead = dead_url()
    args = ["--config", str(cli.config_path), "config", "add", "cluster", "--name", "ha"]
    creds = ["--server", dead, "--server", api.url, "--login", ADMIN[0], "--password", ADMIN[1]]
    assert ok(cli.raw(*args, *creds)).startswith(f'cluster "ha" added: {dead}, {api.url} as admin')
    raw = yaml.safe_load(cli.config_path.read_text())["clusters"][0]
    assert (raw["server"], raw["servers"]) == (dead, [dead, api.url])
    (entry,) = load_config(cli.config_path).clusters
    assert entry.urls == [dead, api.url]

    result = cli.raw("--config", str(cli.config_path), "--debug", "pool", "list")
    assert ok(result).startswith("NAME  NODE  TYPE")
    assert result.stderr.startswith(f"debug: endpoint {dead}, {api.url} (config:ha)")
    listed = ok(cli.raw("--config", str(cli.config_path), "config", "list"))
    assert f"ha    {dead}, {api.url}  *" in listed


def test_every_server_down_names_them_all(offline_cli):
    cli = offline_cli
    a, b = dead_url(), dead_url()
    cli.config_path.parent.mkdir(parents=True)
    cli.config_path.write_text(
        yaml.safe_dump(
            {
                "current-cluster": "ha",
                "clusters": [{"name": "ha", "servers": [a, b], "token": "otx_x"}],
            }
        )
    )
    err = failed(cli.raw("--config", str(cli.config_path), "pool", "list"))
    assert err == f"Error: cannot connect to the control plane at {a} and {b}: connection refused\n"


def test_reset_credentials_prints_the_token_once_and_the_command_to_run(cli, api):
    node = join_node(api, "reset-me")
    result = cli("node", "reset-credentials", "reset-me", "--ttl", "30m")
    lines = ok(result).splitlines()
    assert lines[0] == f"node: reset-me ({node.id})"
    assert lines[1].startswith("expires_at: ")
    token = lines[2].removeprefix("token: ")
    assert token.startswith("otxr_")
    assert "store this token now: it cannot be shown again" in result.stderr
    assert f"otherix-agent bootstrap --server {api.url} --rejoin-token {token}" in result.stderr
    r = httpx.post(f"{api.url}/v1/nodes/rejoin", json={"rejoin_token": token})
    assert r.status_code == 200, r.text
    assert r.json()["node_id"] == node.id


def test_reset_credentials_refusals(cli, api):
    join_node(api, "reset-refused")
    assert usage(cli("node", "reset-credentials", "reset-refused", "--ttl", "soon")).startswith(
        "Error: --ttl: "
    )
    err = failed(cli("node", "reset-credentials", "reset-refused", "--ttl", "10s"))
    assert "ttl_seconds" in err, err
    assert failed(cli("node", "reset-credentials", "nosuch")) == (
        "Error: node \"nosuch\" not found; run 'otherix node list' to see the nodes\n"
    )
    err = failed(cli("node", "reset-credentials", "reset-refused", role="operator"))
    assert err == "Error: permission denied: role operator lacks node:manage\n"

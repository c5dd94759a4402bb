"""The agent's control-plane URLs: ``node.json`` keeps a list (old files with one
``server`` keep working), ``control_plane.urls`` is the config's list form, and
``serve`` tells a node without usable state how to come back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from otherix.agent import state
from otherix.agent.main import cli
from otherix.agent.settings import AgentSettings
from otherix.config import ConfigError, load_config

OLD = {
    "server": "http://cp-a:8080",
    "node_name": "n1",
    "node_id": "id-1",
    "credential": "otxn_secret",
    "architecture": "amd64",
    "revision": 3,
}


def test_an_old_node_json_with_one_server_loads_and_is_rewritten_with_a_list(
    tmp_path: Path,
) -> None:
    (tmp_path / "node.json").write_text(json.dumps(OLD))
    loaded = state.load(tmp_path)
    assert loaded is not None
    assert loaded.urls == ("http://cp-a:8080",)
    state.save(tmp_path, loaded)
    raw = json.loads((tmp_path / "node.json").read_text())
    assert raw["servers"] == ["http://cp-a:8080"]
    assert raw["server"] == "http://cp-a:8080"


def test_several_servers_round_trip_and_server_stays_the_first(tmp_path: Path) -> None:
    node = state.NodeState(
        server="http://cp-a:8080",
        servers=("http://cp-a:8080", "http://cp-b:8080"),
        node_name="n1",
        node_id="id-1",
        credential="otxn_secret",
        architecture="amd64",
    )
    state.save(tmp_path, node)
    raw = json.loads((tmp_path / "node.json").read_text())
    assert raw["server"] == "http://cp-a:8080"  # what an older agent would read
    assert raw["servers"] == ["http://cp-a:8080", "http://cp-b:8080"]
    assert state.load(tmp_path) == node
    assert state.load(tmp_path).with_revision(4).urls == node.urls  # type: ignore[union-attr]


@pytest.mark.parametrize("servers", [[], "http://x", ["cp:8080"], [1]])
def test_bad_servers_in_node_json_are_a_state_error(tmp_path: Path, servers: object) -> None:
    (tmp_path / "node.json").write_text(json.dumps({**OLD, "servers": servers}))
    with pytest.raises(state.StateError, match="servers must be a non-empty list"):
        state.load(tmp_path)


def test_control_plane_urls_is_the_list_form_of_url() -> None:
    both = {"control_plane.url": "http://a", "control_plane.urls": ["http://b"]}
    with pytest.raises(ConfigError, match="set url or urls, not both"):
        load_config(AgentSettings, overrides=both)
    with pytest.raises(ConfigError, match="must start with http"):
        load_config(AgentSettings, overrides={"control_plane.urls": ["cp-b:8080"]})
    env = {"OTHERIX_CONTROL_PLANE__URLS": "[http://a:1, http://b:2]"}
    settings = load_config(AgentSettings, env=env)
    assert settings.control_plane.configured_urls() == ["http://a:1", "http://b:2"]
    one = load_config(AgentSettings, overrides={"control_plane.url": "http://a"})
    assert one.control_plane.configured_urls() == ["http://a"]
    assert AgentSettings().control_plane.configured_urls() is None


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_serve_without_node_json_names_the_way_back(tmp_path: Path) -> None:
    result = run("serve", "--data-dir", str(tmp_path))
    assert result.exit_code == 1
    err = " ".join(result.stderr.split())
    assert "this node is not enrolled" in err
    assert "'otherix-agent bootstrap --server URL --join-token TOKEN --node-name NAME'" in err
    assert "'otherix node reset-credentials NODE'" in err
    rejoin = f"'otherix-agent bootstrap --server URL --rejoin-token TOKEN --data-dir {tmp_path}'"
    assert rejoin in err


def test_serve_with_a_damaged_node_json_names_the_way_back(tmp_path: Path) -> None:
    (tmp_path / "node.json").write_text('{"server": "http://cp:8080", "node_na')
    result = run("serve", "--data-dir", str(tmp_path))
    assert result.exit_code == 1
    err = " ".join(result.stderr.split())
    assert "is not valid JSON" in err
    assert "'otherix node reset-credentials NODE'" in err
    assert "--rejoin-token TOKEN" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give exactly one of --join-token and --rejoin-token"),
        (("--join-token", "otxj_x", "--rejoin-token", "otxr_x"), "give exactly one of"),
        (("--join-token", "otxj_x"), "--node-name is needed with --join-token"),
    ],
)
def test_bootstrap_token_flags_are_usage_errors(tmp_path: Path, args, message) -> None:
    result = run("bootstrap", "--server", "http://127.0.0.1:9", *args, "--data-dir", str(tmp_path))
    assert result.exit_code == 2
    assert message in result.stderr
    assert state.load(tmp_path) is None


def test_rejoin_replaces_a_damaged_file_only_after_the_control_plane_said_yes(
    tmp_path: Path,
) -> None:
    damaged = '{"server": "http://cp:8080", "node_na'
    (tmp_path / "node.json").write_text(damaged)
    result = run(
        "bootstrap", "--server", "http://127.0.0.1:9", "--server", "http://127.0.0.1:10",
        "--rejoin-token", "otxr_x", "--data-dir", str(tmp_path),
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: cannot reach the control plane at http://127.0.0.1:9, http://127.0.0.1:10"
    )
    assert (tmp_path / "node.json").read_text() == damaged

"""``otherix-agent`` command line without a control plane: help, refusals, config errors."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from otherix.agent import state
from otherix.agent.main import cli

NODE = state.NodeState(
    server="http://cp:8080",
    node_name="n1",
    node_id="id-1",
    credential="otxn_secret",
    architecture="amd64",
)


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def bootstrap(data_dir: Path, server: str = "http://127.0.0.1:9", token: str = "otxj_x"):
    """``otherix-agent bootstrap`` of node ``n2`` into ``data_dir`` (port 9: nothing listens)."""
    return run(
        "bootstrap", "--server", server, "--join-token", token, "--node-name", "n2",
        "--data-dir", str(data_dir),
    )  # fmt: skip


def test_help_explains_each_command() -> None:
    top = run("--help")
    assert top.exit_code == 0
    assert "bootstrap" in top.output
    assert "serve" in top.output
    boot = run("bootstrap", "--help")
    for flag in ("--server", "--join-token", "--node-name", "--data-dir", "--architecture"):
        assert flag in boot.output
    assert "--force" in boot.output
    serve = run("serve", "--help")
    assert "SIGTERM" in serve.output
    assert "--config" in serve.output


def test_bootstrap_refuses_an_enrolled_node_without_force(tmp_path: Path) -> None:
    state.save(tmp_path, NODE)
    result = bootstrap(tmp_path)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: already enrolled as node 'n1' with http://cp:8080")
    assert "--force" in result.stderr
    assert state.load(tmp_path) == NODE


def test_bootstrap_reports_an_unreachable_control_plane(tmp_path: Path) -> None:
    result = bootstrap(tmp_path)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach the control plane at http://127.0.0.1:9")
    assert state.load(tmp_path) is None


def test_bootstrap_rejects_a_non_http_server(tmp_path: Path) -> None:
    result = bootstrap(tmp_path, server="cp:8080", token="t")
    assert result.exit_code == 1
    assert "must be an http:// or https:// URL" in result.stderr


def test_serve_needs_an_enrolment(tmp_path: Path) -> None:
    result = run("serve", "--data-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "this node is not enrolled" in result.stderr
    assert "otherix-agent bootstrap" in result.stderr


def test_serve_reports_a_bad_config_key(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("control_plane:\n  watch_timout: 5\n")
    result = run("serve", "--data-dir", str(tmp_path), "--config", str(config))
    assert result.exit_code == 1
    assert "control_plane.watch_timout: unknown key" in result.stderr


def test_a_ca_file_builds_a_verifying_client(tmp_path: Path) -> None:
    import ssl

    from otherix.agent.main import _client
    from otherix.agent.settings import AgentSettings
    from otherix.config import load_config

    cafile = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    settings = load_config(AgentSettings, overrides={"control_plane.ca_file": cafile})
    client = _client(settings, "https://cp.example:8443", "otxn_x")  # no deprecation warning
    try:
        assert client.watch_grace == settings.control_plane.request_timeout
    finally:
        client.close()


def test_a_bad_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    config = tmp_path / "agent.yaml"
    config.write_text(f"control_plane:\n  ca_file: {bad}\n")
    state.save(tmp_path / "data", NODE)
    result = run("serve", "--data-dir", str(tmp_path / "data"), "--config", str(config))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: control_plane.ca_file {bad}:")

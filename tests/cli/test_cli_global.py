"""Global flags, precedence (§5.1), error rendering (§5.2), version and completion."""

from __future__ import annotations

import json

from clihelpers import failed, ok, usage

from otherix import __version__
from otherix.cli.config import CliConfig, ClusterEntry, save_config

DEAD = "http://127.0.0.1:1"


def write_config(cli, *entries: ClusterEntry, current: str = "") -> None:
    save_config(cli.config_path, CliConfig(current_cluster=current, clusters=list(entries)))


def test_endpoint_and_token_from_current_config_entry(cli, api):
    write_config(cli, ClusterEntry("lab", api.url, api.tokens["viewer"]), current="lab")
    result = cli.raw("--debug", "pool", "list")
    assert ok(result).startswith("NAME  NODE  TYPE")
    assert result.stderr == f"debug: endpoint {api.url} (config:lab), token (config:lab)\n"


def test_env_beats_config(cli, api):
    write_config(cli, ClusterEntry("lab", DEAD, "bad-token"), current="lab")
    env = {"OTHERIX_SERVER": api.url, "OTHERIX_API_TOKEN": api.tokens["viewer"]}
    result = cli.raw("--debug", "pool", "list", env=env)
    ok(result)
    assert result.stderr == f"debug: endpoint {api.url} (env), token (env)\n"


def test_flags_beat_env_and_config(cli, api):
    write_config(cli, ClusterEntry("lab", DEAD, "bad-token"), current="lab")
    env = {"OTHERIX_SERVER": DEAD, "OTHERIX_API_TOKEN": "bad-token"}
    flags = ["--endpoint", api.url, "--token", api.tokens["viewer"]]
    result = cli.raw("--debug", *flags, "pool", "list", env=env)
    ok(result)
    assert result.stderr == f"debug: endpoint {api.url} (flag), token (flag)\n"


def test_mixed_sources_resolve_each_value_on_its_own(cli, api):
    # Endpoint from the config entry, token from the environment.
    write_config(cli, ClusterEntry("lab", api.url, "bad-token"), current="lab")
    env = {"OTHERIX_API_TOKEN": api.tokens["viewer"]}
    result = cli.raw("--debug", "pool", "list", env=env)
    ok(result)
    assert result.stderr == f"debug: endpoint {api.url} (config:lab), token (env)\n"


def test_env_token_is_used_when_no_flag(cli, api):
    env = {"OTHERIX_API_TOKEN": "otx_not-a-real-token"}
    err = failed(cli.raw("--endpoint", api.url, "pool", "list", env=env))
    assert err.startswith("Error: ")
    assert err.count("\n") == 1  # one line, no traceback


def test_config_env_var_and_cluster_flag_select_the_entry(cli, api, tmp_path):
    other = tmp_path / "elsewhere.yaml"
    save_config(
        other,
        CliConfig(
            current_cluster="dead",
            clusters=[
                ClusterEntry("dead", DEAD, "x"),
                ClusterEntry("live", api.url, api.tokens["viewer"]),
            ],
        ),
    )
    env = {"OTHERIX_CONFIG": str(other)}
    err = failed(cli.raw("pool", "list", env=env))
    assert err == f"Error: cannot connect to the control plane at {DEAD}: connection refused\n"
    ok(cli.raw("--cluster", "live", "pool", "list", env=env))
    err = failed(cli.raw("--cluster", "nope", "pool", "list", env=env))
    assert err == (
        'Error: cluster "nope" not found in config; '
        "run 'otherix config list' to see the clusters\n"
    )


def test_config_flag_beats_config_env(cli, api, tmp_path):
    good = tmp_path / "good.yaml"
    save_config(good, CliConfig("a", [ClusterEntry("a", api.url, api.tokens["viewer"])]))
    env = {"OTHERIX_CONFIG": str(tmp_path / "missing.yaml")}
    ok(cli.raw("--config", str(good), "pool", "list", env=env))


def test_missing_endpoint_and_missing_token(offline_cli):
    cli = offline_cli
    err = failed(cli.raw("pool", "list"))
    assert err == (
        "Error: no control-plane endpoint: pass --endpoint, set OTHERIX_SERVER, "
        "or run 'otherix config add cluster'\n"
    )
    err = failed(cli.raw("--endpoint", DEAD, "pool", "list"))
    assert err == (
        "Error: no API token: pass --token, set OTHERIX_API_TOKEN, "
        "or run 'otherix config add cluster'\n"
    )


def test_bad_token_is_an_api_error_exit_1(cli):
    cli.tokens["bogus"] = "otx_bogus"
    result = cli("node", "list", role="bogus")
    assert failed(result).startswith("Error: ")
    assert result.stdout == ""


def test_connection_refused(offline_cli):
    cli = offline_cli
    result = cli.raw("--endpoint", DEAD, "--token", "t", "pool", "list")
    err = failed(result)
    assert err == f"Error: cannot connect to the control plane at {DEAD}: connection refused\n"
    assert "Traceback" not in err


def test_debug_prints_a_traceback(offline_cli):
    cli = offline_cli
    err = failed(cli.raw("--debug", "--endpoint", DEAD, "--token", "t", "pool", "list"))
    first, rest = err.split("\n", 1)
    assert first == f"debug: endpoint {DEAD} (flag), token (flag)"
    assert rest.startswith("Traceback (most recent call last):")
    lines = err.rstrip().splitlines()
    assert lines[-2].startswith(f"debug: connection_refused: {DEAD}/v1/storage-pools: ")
    assert lines[-1] == f"Error: cannot connect to the control plane at {DEAD}: connection refused"


def test_unknown_output_format_is_a_usage_error_before_any_request(offline_cli):
    cli = offline_cli
    # A dead endpoint proves no request is made: the format error comes first.
    result = cli.raw("--endpoint", DEAD, "--token", "t", "pool", "list", "-o", "xml")
    assert usage(result) == 'Error: --output: unknown format "xml" (table, wide, json, yaml)\n'
    result = cli.raw(
        "--endpoint", DEAD, "--token", "t", "cluster", "get-default-pool", "-o", "yaml"
    )
    assert usage(result) == 'Error: --output: unknown format "yaml" (text, json)\n'


def test_click_usage_errors_keep_exit_2(offline_cli):
    cli = offline_cli
    result = cli.raw("pool", "frobnicate")
    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.stderr


def test_version_and_help(offline_cli):
    cli = offline_cli
    assert ok(cli.raw("--version")) == "otherix 0.1.0\n"
    out = ok(cli.raw("pool", "delete", "--help"))
    assert "Example:" in out
    assert "otherix pool delete default --node node-a" in out


def test_every_command_has_help_with_an_example():
    from otherix.cli.main import cli as root

    def walk(cmd, path):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])

    for path, cmd in walk(root, []):
        assert "Example" in (cmd.help or ""), " ".join(path)


def test_completion_scripts(offline_cli):
    cli = offline_cli
    out = ok(cli.raw("completion", "bash"))
    assert "_OTHERIX_COMPLETE=bash_complete" in out
    assert "compdef" in ok(cli.raw("completion", "zsh"))
    assert "complete --no-files --command otherix" in ok(cli.raw("completion", "fish"))
    assert cli.raw("completion", "tcsh").exit_code == 2


def test_writers_env_and_tty_are_injected_through_the_context(tmp_path):
    from click.testing import CliRunner

    from otherix.cli.context import CliContext
    from otherix.cli.main import cli as root

    out: list[str] = []
    err: list[str] = []
    config = tmp_path / "cfg"
    save_config(config, CliConfig("a", [ClusterEntry("a", DEAD, "otx_x")]))
    context = CliContext(env={"OTHERIX_CONFIG": str(config)}, out=out.append, err=err.append)
    result = CliRunner().invoke(root, ["config", "list"], obj=context)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "".join(out) == "NAME  SERVER              CURRENT\na     http://127.0.0.1:1  *\n"

    context = CliContext(env={"OTHERIX_CONFIG": str(config)}, out=out.append, err=err.append)
    result = CliRunner().invoke(root, ["pool", "list"], obj=context)
    assert result.exit_code == 1
    assert err[-1] == f"Error: cannot connect to the control plane at {DEAD}: connection refused\n"


def test_version_shows_the_client_and_the_server(cli, api):
    out = ok(cli.raw("--endpoint", api.url, "version"))  # no token needed
    assert out == f"client: {__version__}\nserver: {__version__} ({api.url})\n"
    out = ok(cli.raw("--endpoint", api.url, "version", "-o", "json"))
    assert json.loads(out) == {"client": __version__, "server": __version__}


def test_version_without_a_server_says_so_after_the_client_line(offline_cli):
    result = offline_cli.raw("version")
    assert result.exit_code == 1
    assert result.stdout == f"client: {__version__}\n"
    assert result.stderr.startswith("Error: no control-plane endpoint")
    result = offline_cli.raw("--endpoint", DEAD, "version")
    assert (result.exit_code, result.stdout) == (1, f"client: {__version__}\n")
    assert (
        result.stderr
        == f"Error: cannot connect to the control plane at {DEAD}: connection refused\n"
    )

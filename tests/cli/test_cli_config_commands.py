"""``otherix config``: add cluster against the real server, then list/use/show/remove."""

from __future__ import annotations

import socket
import stat

import yaml
from clihelpers import failed, get_json, ok, usage

from otherix.cli.config import CliConfig, ClusterEntry, load_config, save_config
from support.server import ADMIN

LOGIN, PASSWORD = ADMIN


def add(cli, name, *extra, **kwargs):
    args = ["--config", str(cli.config_path), "config", "add", "cluster", "--name", name]
    return cli.raw(*args, *extra, **kwargs)


def token_names(api):
    _, body = get_json(api, "/v1/users/me/api-tokens?include_revoked=true")
    return [(t["name"], t["revoked_at"] is not None) for t in body["data"]]


def test_add_cluster_logs_in_mints_a_token_and_writes_a_private_file(cli, api):
    result = add(cli, "dev", "--server", api.url, "--login", LOGIN, "--password", PASSWORD)
    assert ok(result) == (
        f'cluster "dev" added: {api.url} as admin\ncurrent cluster is now "dev"\n'
    )
    assert PASSWORD not in result.stdout + result.stderr

    mode = stat.S_IMODE(cli.config_path.stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(cli.config_path.parent.stat().st_mode) == 0o700
    raw = yaml.safe_load(cli.config_path.read_text())
    assert raw["current-cluster"] == "dev"
    (entry,) = raw["clusters"]
    assert entry["server"] == api.url
    assert entry["token"].startswith("otx_")
    assert entry["token-id"]
    assert PASSWORD not in cli.config_path.read_text()

    # The stored token is what later commands use.
    out = ok(cli.raw("--config", str(cli.config_path), "user", "list"))
    assert out.splitlines()[0].split() == ["NAME", "ROLE", "AGE"]
    assert any(line.split()[:2] == ["admin", "admin"] for line in out.splitlines())
    assert (f"otherix-cli@{socket.gethostname()}", False) in token_names(api)


def test_add_existing_needs_force_and_force_revokes_the_old_token(cli, api):
    creds = ("--server", api.url, "--login", LOGIN, "--password", PASSWORD)
    ok(add(cli, "dev", *creds))
    old = load_config(cli.config_path).clusters[0]

    err = failed(add(cli, "dev", *creds))
    assert err == 'Error: cluster "dev" already exists (use --force to replace it)\n'
    assert len(token_names(api)) == 1  # nothing minted

    ok(add(cli, "dev", *creds, "--force"))
    new = load_config(cli.config_path).clusters[0]
    assert new.token != old.token
    assert sorted(revoked for _, revoked in token_names(api)) == [False, True]
    with api.server.client(old.token) as c:
        assert c.get("/v1/users/me").status_code == 401
    with api.server.client(new.token) as c:
        assert c.get("/v1/users/me").status_code == 200


def test_add_prompts_for_missing_values_on_a_tty(cli, api):
    result = add(cli, "dev", tty=True, input=f"{api.url}\n{LOGIN}\n{PASSWORD}\n")
    ok(result)
    assert "Server: " in result.stderr
    assert "Login: " in result.stderr
    assert "Password: " in result.stderr
    assert PASSWORD not in result.stderr + result.stdout  # hidden input
    assert load_config(cli.config_path).clusters[0].token.startswith("otx_")


def test_add_without_a_tty_takes_env_or_fails_clearly(cli, api):
    err = usage(add(cli, "dev", "--login", LOGIN, "--password", PASSWORD))
    assert err == "Error: missing --server (or set OTHERIX_SERVER)\n"
    env = {"OTHERIX_SERVER": api.url, "OTHERIX_LOGIN": LOGIN, "OTHERIX_PASSWORD": PASSWORD}
    ok(add(cli, "dev", "--no-set-current", env=env))
    cfg = load_config(cli.config_path)
    assert cfg.current_cluster == ""
    assert cfg.clusters[0].server == api.url


def test_add_with_a_wrong_password_writes_nothing(cli, api):
    err = failed(add(cli, "dev", "--server", api.url, "--login", LOGIN, "--password", "nope-nope"))
    assert err.startswith("Error: ")
    assert not cli.config_path.exists()


def test_remove_revokes_the_token_unless_kept(cli, api):
    creds = ("--server", api.url, "--login", LOGIN, "--password", PASSWORD)
    ok(add(cli, "dev", *creds))
    token = load_config(cli.config_path).clusters[0].token
    out = ok(cli.raw("--config", str(cli.config_path), "config", "remove", "dev", "--force"))
    assert out == 'cluster "dev" removed\n'
    with api.server.client(token) as c:
        assert c.get("/v1/users/me").status_code == 401
    assert load_config(cli.config_path).clusters == []


def seed(cli):
    save_config(
        cli.config_path,
        CliConfig(
            current_cluster="b",
            clusters=[
                ClusterEntry("b", "http://127.0.0.1:1", "otx_bbbbbbbbbbbb", "id-b"),
                ClusterEntry("a", "http://127.0.0.1:2", "otx_aaaaaaaaaaaa"),
                ClusterEntry("c", "http://127.0.0.1:3", "otx_cccccccccccc"),
            ],
        ),
    )


def run(cli, *args, **kwargs):
    return cli.raw("--config", str(cli.config_path), "config", *args, **kwargs)


def test_list_use_and_show(offline_cli):
    cli = offline_cli
    seed(cli)
    assert ok(run(cli, "list")) == (
        "NAME  SERVER              CURRENT\n"
        "b     http://127.0.0.1:1  *\n"
        "a     http://127.0.0.1:2\n"
        "c     http://127.0.0.1:3\n"
    )
    assert ok(run(cli, "use", "a")) == 'current cluster is now "a"\n'
    assert load_config(cli.config_path).current_cluster == "a"
    assert failed(run(cli, "use", "zz")) == (
        "Error: cluster \"zz\" not found in config; run 'otherix config list' to see the clusters\n"
    )

    assert ok(run(cli, "show", "b")) == (
        "name: b\nserver: http://127.0.0.1:1\ntoken: otx_bbbb…\ntoken-id: id-b\ncurrent: false\n"
    )
    assert "token: otx_aaaaaaaaaaaa\n" in ok(run(cli, "show", "--show-token"))
    assert '"current": true' in ok(run(cli, "show", "-o", "json"))


def test_remove_current_picks_the_first_remaining_and_prompts_on_a_tty(offline_cli):
    cli = offline_cli
    seed(cli)
    result = run(cli, "remove", "b", tty=True, input="n\n")
    assert failed(result).endswith('Error: aborted: did not remove cluster "b" from the config\n')
    assert result.stdout == ""
    assert 'remove cluster "b" from the config? [y/N]: ' in result.stderr
    assert len(load_config(cli.config_path).clusters) == 3
    result = run(cli, "remove", "b")  # no terminal, no --force
    assert usage(result) == (
        'Error: refusing to remove cluster "b" from the config without confirmation: '
        'stdin is not a terminal; pass --force to remove cluster "b" from the config '
        "without being asked\n"
    )
    assert len(load_config(cli.config_path).clusters) == 3

    # "b" has a token id; its server is unreachable, so the revoke is a warning.
    result = run(cli, "remove", "b", tty=True, input="y\n")
    assert ok(result) == 'cluster "b" removed\ncurrent cluster is now "a"\n'
    assert (
        "warning: could not revoke token id-b: cannot connect to the control plane at "
        "http://127.0.0.1:1: connection refused\n"
    ) in result.stderr
    assert ok(run(cli, "remove", "a", "--force")) == (
        'cluster "a" removed\ncurrent cluster is now "c"\n'
    )
    ok(run(cli, "remove", "c", "--force"))
    assert load_config(cli.config_path) == CliConfig()
    assert failed(run(cli, "show")) == (
        "Error: no current cluster: pass a name or run 'otherix config use <name>'\n"
    )

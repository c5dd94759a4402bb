"""``otherix config``: the local cluster list in ``~/.otherix/config``.

The file of docs/pool-contract.md §11.5.

Owns the commands that edit the config file: ``add cluster`` (log in with a
username and password, mint an ``otx_`` API token named
``otherix-cli@<hostname>``, store server + token + token id), ``use``,
``list``, ``show`` and ``remove``. File format, atomic saves and precedence
live in ``otherix.cli.config``; this module adds the prompts and the calls.

Choices docs/pool-contract.md leaves open:

- ``add cluster`` fails before any request when the entry exists and
  ``--force`` is absent. With ``--force`` the new token is minted and saved
  first; the replaced token is then revoked best-effort (a failure is a
  warning on stderr), with the old token itself and, if that fails and the
  server is the same, with the new login.
- The login session used to mint the token is logged out best-effort, so
  the only lasting credential is the stored API token.
- ``remove`` follows the destructive-command rule (``commands.common``):
  ``remove cluster "x" from the config? [y/N]: `` on a TTY, refused without
  one, unless ``--force``; it revokes the entry's API token best-effort
  unless ``--keep-token``.
- ``show`` masks the token as its first 8 characters plus ``…`` unless
  ``--show-token``; with no name it shows the current cluster.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence
from typing import Any

import click

from otherix.cli.commands.common import (
    force_option,
    output_option,
    render_object,
    require_confirmation,
    validate_output,
)
from otherix.cli.config import (
    ENV_SERVER,
    ClusterEntry,
    ClusterNotFound,
    ConfigError,
    add_cluster,
    cluster_not_found,
    find_cluster,
    remove_cluster,
    save_config,
    use_cluster,
)
from otherix.cli.context import CliContext, get_context
from otherix.cli.errors import describe, usage_error
from otherix.cli.output import render_table
from otherix.client.api import ApiClient
from otherix.client.errors import ClientError

__all__ = ["config"]

ENV_LOGIN = "OTHERIX_LOGIN"
ENV_PASSWORD = "OTHERIX_PASSWORD"  # noqa: S105 - an env var name, not a secret
TOKEN_NAME_MAX = 100
BEST_EFFORT_TIMEOUT = 5.0


@click.group("config")
def config() -> None:
    """Manage the local cluster list (~/.otherix/config).

    \b
    Example:
      otherix config add cluster --name dev --server http://cp:8080 --login admin
      otherix config list
    """


@config.group("add")
def add() -> None:
    """Add an entry to the config file.

    \b
    Example:
      otherix config add cluster --name prod --server https://cp.example:8080 --login admin
    """


def _value(ctx: CliContext, given: str | None, env_name: str, label: str, hidden: bool) -> str:
    if given:
        return given
    if ctx.env.get(env_name):
        return ctx.env[env_name]
    if ctx.stdin_is_tty():
        return ctx.prompt(label, hidden=hidden)
    flag = label.lower()
    raise usage_error(f"missing --{flag} (or set {env_name})")


def token_name() -> str:
    """``otherix-cli@<hostname>``, cut to the API's 100-character limit."""
    return f"otherix-cli@{socket.gethostname() or 'localhost'}"[:TOKEN_NAME_MAX]


def _logout(api: ApiClient, refresh_token: str | None) -> None:
    with contextlib.suppress(ClientError):
        api.json("POST", "/v1/auth/logout", json={"refresh_token": refresh_token})


def _same_place(a: Sequence[str], b: Sequence[str]) -> bool:
    return bool({u.rstrip("/") for u in a} & {u.rstrip("/") for u in b})


def _revoke_old(ctx: CliContext, old: ClusterEntry, servers: list[str], access: str) -> None:
    if not old.token_id:
        return
    attempts: list[tuple[list[str], str]] = [(old.urls, old.token)]
    if _same_place(old.urls, servers):
        attempts.append((servers, access))
    last: ClientError | None = None
    for endpoint, credential in attempts:
        if not endpoint or not credential:
            continue
        try:
            api = ctx.client_for(endpoint, credential, timeout=BEST_EFFORT_TIMEOUT)
            api.revoke_token(old.token_id)
            return
        except ClientError as exc:
            last = exc
    why = describe(last) if last is not None else "no server or token to revoke it with"
    ctx.warn(f"warning: could not revoke the previous token {old.token_id}: {why}")


@add.command("cluster")
@click.option("--name", required=True, help="Name of the entry.")
@click.option(
    "--server",
    "servers",
    multiple=True,
    help="Control-plane URL [env: OTHERIX_SERVER]. Repeat it for each replica: the CLI "
    "tries them in order and fails over when one does not answer.",
)
@click.option("--login", help="Username [env: OTHERIX_LOGIN].")
@click.option("--password", help="Password [env: OTHERIX_PASSWORD]; prompted on a TTY.")
@click.option(
    "--set-current/--no-set-current",
    default=True,
    show_default=True,
    help="Make it the current cluster.",
)
@force_option("Replace an existing entry and revoke its old token.")
def add_cluster_cmd(
    name: str,
    servers: tuple[str, ...],
    login: str | None,
    password: str | None,
    set_current: bool,
    force: bool,
) -> None:
    """Log in, mint an API token and store it as a cluster entry.

    Missing --server/--login/--password are read from the environment, then
    prompted for when stdin is a terminal (the password hidden). The stored
    credential is an otx_ API token named otherix-cli@<hostname>, never the
    password.

    \b
    Examples:
      otherix config add cluster --name dev --server http://cp:8080 --login admin
      otherix config add cluster --name prod --server https://cp-a:8080 \\
          --server https://cp-b:8080 --login admin
    """
    ctx = get_context()
    cfg = ctx.load_config()
    old = find_cluster(cfg, name)
    if old is not None and not force:
        raise ConfigError(f'cluster "{name}" already exists (use --force to replace it)')
    urls = list(dict.fromkeys(servers)) or [_value(ctx, None, ENV_SERVER, "Server", hidden=False)]
    login = _value(ctx, login, ENV_LOGIN, "Login", hidden=False)
    password = _value(ctx, password, ENV_PASSWORD, "Password", hidden=True)
    target = urls[0] if len(urls) == 1 else urls

    api = ctx.client_for(target, None)
    session = api.login(login, password)
    access = session.access_token
    # The same client mints the API token: it stays on the replica that answered
    # the login, which issued the JWT (replicas should share auth.jwt_secret, but
    # adding a cluster must not depend on it).
    api.token = access
    minted = api.create_token(token_name())
    _logout(api, session.refresh_token)
    if minted.token is None:  # a replayed answer carries no secret: nothing usable to save
        raise ConfigError(
            "the server answered without the new token's secret (a replayed request); "
            "nothing was saved: run the command again"
        )

    entry = ClusterEntry(
        name=name,
        server=urls[0],
        token=minted.token,
        token_id=minted.id,
        servers=urls if len(urls) > 1 else [],
    )
    add_cluster(cfg, entry, force=force, set_current=set_current)
    save_config(ctx.config_path, cfg)
    if old is not None:
        _revoke_old(ctx, old, urls, access)
    ctx.line(f'cluster "{name}" added: {", ".join(urls)} as {session.user.username}')
    if set_current:
        ctx.line(f'current cluster is now "{name}"')


@config.command("use")
@click.argument("name")
def use(name: str) -> None:
    """Make NAME the current cluster.

    \b
    Example:
      otherix config use prod
    """
    ctx = get_context()
    cfg = ctx.load_config()
    use_cluster(cfg, name)
    save_config(ctx.config_path, cfg)
    ctx.line(f'current cluster is now "{name}"')


@config.command("list")
@output_option("table", ("table", "json"))
def list_cmd(output: str) -> None:
    """List the configured clusters (NAME SERVER CURRENT).

    \b
    Example:
      otherix config list
    """
    fmt = validate_output(output, ("table", "json"))
    ctx = get_context()
    cfg = ctx.load_config()
    if fmt == "json":
        ctx.write(
            render_object(
                [
                    {
                        "name": c.name,
                        "server": c.server,
                        "servers": c.urls,
                        "current": c.name == cfg.current_cluster,
                    }
                    for c in cfg.clusters
                ],
                fmt,
            )
        )
        return
    rows = [
        [c.name, ", ".join(c.urls), "*" if c.name == cfg.current_cluster else ""]
        for c in cfg.clusters
    ]
    ctx.write(render_table(("NAME", "SERVER", "CURRENT"), rows))


def _masked(token: str) -> str:
    return f"{token[:8]}…" if token else ""


@config.command("show")
@click.argument("name", required=False)
@click.option("--show-token", is_flag=True, help="Print the token instead of its prefix.")
@output_option("text", ("text", "json"))
def show(name: str | None, show_token: bool, output: str) -> None:
    """Show one cluster entry (the current one by default).

    \b
    Example:
      otherix config show dev --show-token
    """
    fmt = validate_output(output, ("text", "json"))
    ctx = get_context()
    cfg = ctx.load_config()
    target = name or cfg.current_cluster
    if not target:
        raise ConfigError("no current cluster: pass a name or run 'otherix config use <name>'")
    entry = find_cluster(cfg, target)
    if entry is None:
        raise ClusterNotFound(cluster_not_found(target))
    token = entry.token if show_token else _masked(entry.token)
    body: dict[str, Any] = {
        "name": entry.name,
        "server": ", ".join(entry.urls) if fmt == "text" else entry.server,
        "servers": entry.urls,
        "token": token,
        "token-id": entry.token_id,
        "current": entry.name == cfg.current_cluster,
    }
    if fmt == "json":
        ctx.write(render_object(body, fmt))
        return
    for key, value in body.items():
        if key == "servers":
            continue  # the text form shows them all on the server line
        if key == "current":
            value = "true" if value else "false"
        ctx.line(f"{key}: {value if value is not None else ''}")


@config.command("remove")
@click.argument("name")
@force_option("Do not ask for confirmation.")
@click.option("--keep-token", is_flag=True, help="Do not revoke the entry's API token.")
def remove(name: str, force: bool, keep_token: bool) -> None:
    """Remove a cluster entry and revoke its API token (best-effort).

    When the current cluster is removed, the alphabetically first remaining
    entry becomes current.

    \b
    Example:
      otherix config remove old-lab --force
    """
    ctx = get_context()
    cfg = ctx.load_config()
    entry = find_cluster(cfg, name)
    if entry is None:
        raise ClusterNotFound(cluster_not_found(name))
    require_confirmation(
        ctx,
        f'remove cluster "{name}" from the config',
        force=force,
    )
    remove_cluster(cfg, name)
    save_config(ctx.config_path, cfg)
    if entry.token_id and not keep_token:
        try:
            api = ctx.client_for(entry.urls, entry.token, timeout=BEST_EFFORT_TIMEOUT)
            api.revoke_token(entry.token_id)
        except ClientError as exc:
            ctx.warn(f"warning: could not revoke token {entry.token_id}: {describe(exc)}")
    ctx.line(f'cluster "{name}" removed')
    if cfg.current_cluster:
        ctx.line(f'current cluster is now "{cfg.current_cluster}"')

"""``otherix-api quickstart``: a single-node cluster in one command.

Starts the control plane on SQLite in ``--data-dir`` and a local agent
enrolled automatically, creates the bootstrap admin on the first run (its
password is printed once and never stored), and writes a CLI context
``local`` through ``otherix config add cluster``. Running it again reuses the
same data. Ctrl-C (or SIGTERM) stops both cleanly. A data directory whose
database was lost is refused, as ``serve`` refuses it; ``--init`` starts a new,
empty cluster there and moves the old agent's state aside (its credential
belongs to the lost cluster), so the local node joins the new one.

Pool paths: as root the allowlist stays ``/var/lib/otherix/pools/``; as
another user it becomes ``{data_dir}/pools/`` so nothing needs privileges.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from otherix.api import datadir
from otherix.api.bootstrap import close_deps, load_settings, open_deps
from otherix.api.compose import build_services
from otherix.api.deps import Deps
from otherix.api.server import exit_if_lost, make_server
from otherix.api.services.nodes import NodeService
from otherix.api.services.users import UserService
from otherix.api.settings import ApiSettings
from otherix.config import ConfigError
from otherix.models.auth import UserCreate
from otherix.models.nodes import JoinTokenCreate
from otherix.rbac import Role

ADMIN = "admin"


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/otherix/quickstart")
    return Path.home() / ".otherix" / "quickstart"


def _script(name: str) -> str:
    """The sibling console script of the running interpreter, else PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def settings_for(data_dir: Path, listen: str, config_file: Path | None) -> ApiSettings:
    overrides: dict[str, Any] = {"data_dir": data_dir, "server.listen": listen}
    if os.geteuid() != 0:
        overrides["storage_pools.allowed_path_prefixes"] = [f"{data_dir}/pools/"]
    try:
        return load_settings(config_file, os.environ, overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def ensure_admin(deps: Deps, users: UserService) -> str | None:
    """Create ``admin`` with a random password on first run; returns the password."""
    with deps.db.read() as conn:
        if deps.db.users.count_users(conn):
            return None
    password = os.environ.get("OTHERIX_BOOTSTRAP_ADMIN_PASSWORD") or secrets.token_urlsafe(18)
    users.create_user(UserCreate(username=ADMIN, password=password, role=Role.ADMIN))
    return password


def _agent_env(settings: ApiSettings) -> dict[str, str]:
    env = dict(os.environ)
    env["OTHERIX_STORAGE__ALLOWED_PATH_PREFIXES"] = json.dumps(
        settings.storage_pools.allowed_path_prefixes
    )
    return env


def enrol_agent(nodes: NodeService, settings: ApiSettings, url: str, node_name: str) -> Path:
    agent_dir = settings.data_dir / "agent"
    if (agent_dir / "node.json").exists():
        return agent_dir
    token = nodes.create_join_token(
        "quickstart", JoinTokenCreate(ttl_seconds=600, max_uses=1, description="quickstart")
    )
    cmd = [
        _script("otherix-agent"),
        "bootstrap",
        "--server",
        url,
        "--join-token",
        token.token,
        "--node-name",
        node_name,
        "--data-dir",
        str(agent_dir),
    ]
    subprocess.run(cmd, check=True, env=_agent_env(settings))  # noqa: S603 - our own script
    return agent_dir


def write_cli_context(url: str, password: str) -> None:
    env = {**os.environ, "OTHERIX_PASSWORD": password}
    cmd = [
        _script("otherix"),
        "config",
        "add",
        "cluster",
        "--name",
        "local",
        "--server",
        url,
        "--login",
        ADMIN,
        "--force",
    ]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)  # noqa: S603


def _start_agent(settings: ApiSettings, agent_dir: Path) -> subprocess.Popen[bytes]:
    cmd = [_script("otherix-agent"), "serve", "--data-dir", str(agent_dir)]
    return subprocess.Popen(cmd, env=_agent_env(settings))  # noqa: S603


def _open(settings: ApiSettings, init: bool) -> Deps:
    try:
        previous = datadir.read_marker(settings.data_dir)
    except datadir.DataDirMismatch:
        previous = None
    try:
        deps = open_deps(settings, init=init)
    except datadir.DataDirMismatch as exc:
        raise click.ClickException(str(exc)) from exc
    agent_dir = settings.data_dir / "agent"
    if init and previous not in (None, deps.cluster_id) and agent_dir.exists():
        aside = agent_dir.with_name(f"agent.before-init-{int(time.time())}")
        agent_dir.rename(aside)
        click.echo(f"--init: the old agent state of cluster {previous} moved to {aside}", err=True)
    return deps


def run(
    data_dir: Path, listen: str, node_name: str, config_file: Path | None, *, init: bool = False
) -> None:
    settings = settings_for(data_dir, listen, config_file)
    deps = _open(settings, init)
    services = build_services(deps)
    password = ensure_admin(deps, services.user_service)
    host = settings.server.host if settings.server.host not in ("0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
    url = f"http://{host}:{settings.server.port}"
    server = make_server(deps, services)
    agent: dict[str, subprocess.Popen[bytes]] = {}
    failed: list[str] = []

    def after_start() -> None:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or server.should_exit:
                return
            time.sleep(0.05)
        try:
            agent_dir = enrol_agent(services.node_service, settings, url, node_name)
            agent["proc"] = _start_agent(settings, agent_dir)
            if password:
                write_cli_context(url, password)
        except (OSError, subprocess.CalledProcessError) as exc:
            failed.append(str(exc))
            server.should_exit = True
            return
        _banner(url, password, settings, node_name)

    threading.Thread(target=after_start, name="quickstart", daemon=True).start()
    try:
        server.run()
    finally:
        proc = agent.get("proc")
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        exit_if_lost(deps)
        close_deps(deps)
    if failed:
        raise click.ClickException(f"quickstart failed: {failed[0]}")


def _banner(url: str, password: str | None, settings: ApiSettings, node: str) -> None:
    lines = [
        "",
        f"Otherix is running at {url} (data in {settings.data_dir}).",
        f"Node {node!r} is joining; its default pool lives under "
        f"{settings.storage_pools.allowed_path_prefixes[0]}.",
    ]
    if password:
        lines += [
            f"Admin user: {ADMIN}   password: {password}",
            "  (shown once; the CLI context 'local' already holds an API token)",
        ]
    lines += [
        "",
        "Try:",
        "  otherix node list",
        "  otherix pool list",
        f"  otherix pool create fast --node {node} "
        f"--path {settings.storage_pools.allowed_path_prefixes[0]}fast --wait",
        "  otherix cluster get-default-pool",
        "",
        "Press Ctrl-C to stop.",
        "",
    ]
    click.echo("\n".join(lines), err=True)

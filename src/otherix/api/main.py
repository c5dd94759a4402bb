"""``otherix-api``: ``serve``, ``migrate``, ``backup``, ``restore`` and ``quickstart``
(composition root; backup and restore are ``api/backup.py``).

``serve`` loads settings (defaults < ``--config`` YAML < ``OTHERIX_`` env <
flags), checks the data directory against its database (``datadir``: a data
directory whose database was lost refuses to start unless ``--init``), opens
the store, runs migrations, creates the bootstrap admin from
``OTHERIX_BOOTSTRAP_ADMIN_USERNAME``/``_PASSWORD``, and serves until SIGTERM
or SIGINT, which drain in-flight requests (long-poll watches are answered at
once) and exit 0. A server whose SQLite file was deleted or replaced while it
ran exits 1 without closing the database (``server.exit_if_lost``).

The uvicorn server itself is built by ``api/server.py``, which ``quickstart``
uses too: this module is the top of the process (only ``__main__`` imports it).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from otherix import __version__
from otherix.api import backup as bk
from otherix.api import quickstart as qs
from otherix.api.bootstrap import (
    bootstrap_admin_from_env,
    close_deps,
    ensure_admin,
    load_settings,
    open_deps,
    open_store,
)
from otherix.api.compose import build_services
from otherix.api.datadir import DataDirMismatch
from otherix.api.server import exit_if_lost, run_server
from otherix.config import ConfigError
from otherix.store import StoreError
from otherix.store.migrate import current_revision, pending, upgrade

INIT_HELP = (
    "Start even though the data directory was initialised before and its database is "
    "missing, empty or another cluster's: a missing or empty database becomes a new, "
    "empty cluster, and the data directory's marker is rewritten. Without it such a "
    "start is refused, so a lost database is restored instead of silently replaced."
)


def _settings(config_file: Path | None, overrides: dict[str, Any]) -> Any:
    try:
        return load_settings(config_file, os.environ, overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="otherix-api")
def cli() -> None:
    """Otherix control plane."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@cli.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="YAML config file.",
)
@click.option(
    "--data-dir", type=click.Path(path_type=Path, file_okay=False), help="Overrides data_dir."
)
@click.option("--listen", help="HOST:PORT to listen on (overrides server.listen).")
@click.option(
    "--database-url", help="sqlite:///PATH or postgresql+psycopg://... (overrides database.url)."
)
@click.option("--init", is_flag=True, help=INIT_HELP)
def serve(
    config_file: Path | None,
    data_dir: Path | None,
    listen: str | None,
    database_url: str | None,
    init: bool,
) -> None:
    """Run the control plane until SIGTERM/SIGINT.

    \b
    Example:
      otherix-api serve --data-dir /var/lib/otherix/api --listen 0.0.0.0:8080
      otherix-api serve --data-dir /var/lib/otherix/api --init   # after losing the database
    """
    settings = _settings(
        config_file, {"data_dir": data_dir, "server.listen": listen, "database.url": database_url}
    )
    try:
        admin = bootstrap_admin_from_env(os.environ)
        deps = open_deps(settings, init=init)
        services = build_services(deps)
        ensure_admin(services.user_service, admin)
    except (ConfigError, StoreError, DataDirMismatch) as exc:
        raise click.ClickException(str(exc)) from exc
    run_server(deps, services)
    exit_if_lost(deps)
    close_deps(deps)


@cli.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="YAML config file.",
)
@click.option(
    "--data-dir", type=click.Path(path_type=Path, file_okay=False), help="Overrides data_dir."
)
@click.option(
    "--database-url", help="sqlite:///PATH or postgresql+psycopg://... (overrides database.url)."
)
@click.option("--dry-run", is_flag=True, help="List the pending migrations; change nothing.")
def migrate(
    config_file: Path | None, data_dir: Path | None, database_url: str | None, dry_run: bool
) -> None:
    """Apply pending database migrations, say which ran, and exit.

    `serve` and `quickstart` run them at start too; both take a lock (an
    advisory lock on PostgreSQL, a file lock beside a SQLite database), so two
    replicas started together never race. A migration interrupted (kill -9,
    power cut) is rolled back with its transaction: run this again.

    \b
    Example:
      otherix-api migrate --dry-run --config /etc/otherix/api.yaml
      otherix-api migrate --config /etc/otherix/api.yaml
    """
    settings = _settings(config_file, {"data_dir": data_dir, "database.url": database_url})
    try:
        db, _ = open_store(settings)  # the same data-directory check as serve
    except (StoreError, DataDirMismatch) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        before = current_revision(db)
        if dry_run:
            steps = pending(db)
            verb = "would run"
        else:
            steps = upgrade(db, pause_at=settings.debug.pause_at)
            verb = "ran"
        for step in steps:
            click.echo(f"{verb} {step.revision}: {step.title}")
        if not steps:
            click.echo(f"nothing to migrate: database at revision {before}")
        elif dry_run:
            click.echo(f"database at revision {before}; nothing changed (--dry-run)")
        else:
            click.echo(f"database at revision {current_revision(db)}")
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.close()


def _store_options(fn: Any) -> Any:
    fn = click.option("--database-url", help="Overrides database.url.")(fn)
    fn = click.option(
        "--data-dir", type=click.Path(path_type=Path, file_okay=False), help="Overrides data_dir."
    )(fn)
    return click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="YAML config file (the one serve uses).",
    )(fn)


@cli.command()
@click.option(
    "--to",
    "dest",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The archive to write.",
)
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@_store_options
def backup(
    dest: Path,
    force: bool,
    config_file: Path | None,
    data_dir: Path | None,
    database_url: str | None,
) -> None:
    """Write a consistent copy of the database to one archive file, while serving.

    SQLite is copied with its online backup API, PostgreSQL with pg_dump
    --format=custom (pg_dump must be on PATH). The archive holds a manifest
    (backend, schema revision, otherix version, sha256 of the copy) and the
    copy; it is written to a temp file and renamed, never over FILE unless
    --force. It holds password and token hashes: keep it as secret as the
    data directory.

    \b
    Example:
      otherix-api backup --config /etc/otherix/api.yaml --to /srv/backup/otherix-$(date +%F).tar
    """
    settings = _settings(config_file, {"data_dir": data_dir, "database.url": database_url})
    try:
        manifest = bk.backup(settings, dest, force=force)
    except bk.BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"backup written to {dest}: {manifest.backend}, schema {manifest.schema_revision}, "
        f"{manifest.payload_size} bytes, sha256 {manifest.payload_sha256}",
        err=True,
    )


@cli.command()
@click.option(
    "--from",
    "src",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="An archive written by 'otherix-api backup'.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace a database that already holds tables, or restore into a data "
    "directory that belongs to another cluster.",
)
@_store_options
def restore(
    src: Path,
    force: bool,
    config_file: Path | None,
    data_dir: Path | None,
    database_url: str | None,
) -> None:
    """Put a backup in place of the configured database; the control plane must be stopped.

    Everything is checked before anything is touched: the archive (truncated
    or damaged: refused), its sha256, its schema revision (one newer than this
    otherix knows: refused), its backend against the configured one, and the
    copy's integrity (SQLite: integrity_check and foreign_key_check;
    PostgreSQL: pg_restore --list). It is refused while a control plane runs on
    the data directory, and over a database that holds tables unless --force.
    A backup of an older schema is restored as it is; the next 'serve' (or
    'otherix-api migrate') takes it to the current schema. Exit 0 when
    restored, 1 when refused (nothing changed) or failed.

    \b
    Example:
      systemctl stop otherix-api
      otherix-api restore --config /etc/otherix/api.yaml --from /srv/backup/otherix.tar --force
      systemctl start otherix-api
    """
    settings = _settings(config_file, {"data_dir": data_dir, "database.url": database_url})

    def say(line: str) -> None:
        click.echo(line, err=True)

    try:
        manifest = bk.restore(settings, src, force=force, say=say)
    except bk.BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    head = bk.schema_head()
    say(f"restored schema {manifest.schema_revision} of {manifest.created_at}")
    if manifest.schema_revision != head:
        say(
            f"the schema is older than this otherix's ({head}): 'otherix-api serve' "
            "migrates it at start (or run 'otherix-api migrate' now)"
        )


@cli.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where state lives (default /var/lib/otherix/quickstart as root, "
    "else ~/.otherix/quickstart).",
)
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT.")
@click.option("--node-name", default=None, help="Name of the local node (default: hostname).")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--init", is_flag=True, help=INIT_HELP)
def quickstart(
    data_dir: Path | None, listen: str, node_name: str | None, config_file: Path | None, init: bool
) -> None:
    """Run a single-node cluster: control plane on SQLite plus a local agent.

    \b
    Example:
      otherix-api quickstart
      otherix node list
    """
    import socket

    qs.run(
        data_dir or qs.default_data_dir(),
        listen,
        node_name or socket.gethostname(),
        config_file,
        init=init,
    )


def main() -> None:
    try:
        cli.main(prog_name="otherix-api", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)

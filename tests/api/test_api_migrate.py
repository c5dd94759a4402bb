"""``otherix-api migrate`` and ``--dry-run`` (issue 17.4): what they say and do."""

from __future__ import annotations

from click.testing import CliRunner

from otherix.api.main import cli
from otherix.store import Database
from otherix.store.migrate import current_revision, pending, upgrade
from support.schemafill import PREVIOUS


def test_dry_run_lists_the_pending_migrations_and_changes_nothing_then_migrate_runs_them(
    tmp_path,
):
    url = f"sqlite:///{tmp_path}/api/otherix.db"
    db = Database(url)
    try:
        upgrade(db, PREVIOUS)
        todo = pending(db)
        assert todo
        args = ["migrate", "--data-dir", str(tmp_path / "api"), "--database-url", url]

        dry = CliRunner().invoke(cli, [*args, "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert dry.stdout.splitlines() == [
            *(f"would run {s.revision}: {s.title}" for s in todo),
            f"database at revision {PREVIOUS}; nothing changed (--dry-run)",
        ]
        assert all(s.title for s in todo)  # each migration's docstring has a title
        assert current_revision(db) == PREVIOUS

        real = CliRunner().invoke(cli, args)
        assert real.exit_code == 0, real.output
        assert real.stdout.splitlines() == [
            *(f"ran {s.revision}: {s.title}" for s in todo),
            f"database at revision {todo[-1].revision}",
        ]
        assert current_revision(db) == todo[-1].revision

        again = CliRunner().invoke(cli, args)
        assert again.stdout == f"nothing to migrate: database at revision {todo[-1].revision}\n"
    finally:
        db.close()


def test_migrate_help_has_an_example():
    result = CliRunner().invoke(cli, ["migrate", "--help"])
    assert result.exit_code == 0
    assert "otherix-api migrate --dry-run --config /etc/otherix/api.yaml" in result.output

"""Write docs/cli.md from the ``otherix`` click tree (``--help`` of every command).

Run: ``.venv/bin/python scripts/gen_cli_docs.py``. A test fails when the file
is out of date, so the reference always matches the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from otherix.cli.main import cli

HEADER = """# `otherix` CLI reference

Generated from the commands' own `--help` by `scripts/gen_cli_docs.py`; a test
keeps it in step with the code. Conventions:

- Global flags come before the command: `otherix --endpoint URL --token T pool list`.
- The endpoint is taken from `--endpoint`, then `$OTHERIX_SERVER`, then the
  `--cluster` entry of `~/.otherix/config` (or `$OTHERIX_CONFIG`), then the
  current cluster; the token from `--token`, `$OTHERIX_API_TOKEN`, then the
  same config entries.
- A config entry may list several control-plane URLs (`servers:`, from
  `config add cluster --server A --server B`), one per API replica: the CLI
  tries them in order, moves to the next on a connection error or a timeout
  (never on an HTTP answer), and stays on the one that answers. A request that
  may have reached a replica before it went silent is sent again only when
  that is safe (GET, PUT, DELETE, or with an `Idempotency-Key`).
- Errors print `error: <message>` on stderr and exit 1; `--debug` adds
  tracebacks. Usage mistakes (unknown command, missing required flag) exit 2.
- Prompts go to stderr and appear only when stdin is a terminal.
"""


def _walk(cmd: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            out += _walk(cmd.commands[name], [*path, name])
    return out


def render() -> str:
    parts = [HEADER]
    for path, cmd in _walk(cli, ["otherix"]):
        if cmd.hidden:
            continue
        with click.Context(
            cmd, info_name=" ".join(path), terminal_width=100, help_option_names=["-h", "--help"]
        ) as ctx:
            text = cmd.get_help(ctx)
        parts.append(f"\n## `{' '.join(path)}`\n\n```text\n{text}\n```\n")
    return "".join(parts)


def main() -> int:
    target = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
    target.write_text(render())
    print(f"wrote {target}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())

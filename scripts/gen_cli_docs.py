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
- **A token goes only to its own server.** When `--endpoint` (or
  `$OTHERIX_SERVER`) names a server that is not one of the config entry's
  servers, the entry's token is not sent: pass `--token` or set
  `$OTHERIX_API_TOKEN` for that server, else the command stops with
  `Error: not sending the token of cluster "dev" to https://other:8080: ...`.
- **Errors are one sentence** on stderr: `Error: pool "x" not found; run
  'otherix pool list' to see the pools`. Every not-found names what was not
  found and the command that lists the candidates. The server's error code,
  HTTP status and details, and a traceback, are printed only with `--debug`.
- **Exit codes**: `0` success; `1` the command failed (an error from the
  server, an unreachable server, a bad config file or environment, a failed
  wait, a declined prompt); `2` the command was called wrongly (unknown
  command or flag, a missing required flag or value, a bad `-o` format such as
  `-o wide` where a command has no such output, an unparsable duration or JSON
  flag, and a destructive command without a terminal and without `--force`),
  printed as `Usage: ...` followed by `Error: ...`.
- **Destructive commands** (every `delete`, `token revoke`, `cluster
  unset-default-pool`, `config remove`, `delete -f`): with `--force` they go
  ahead; on a terminal they ask `... [y/N]:` on stderr, and any answer but yes
  exits 1 with `Error: aborted: did not ...` and changes nothing; without a
  terminal and without `--force` they refuse (exit 2) before doing anything:
  `Error: refusing to delete pool fast without confirmation: stdin is not a
  terminal; pass --force to delete pool fast without being asked`.
- **Dry runs ask the server.** `create -f --dry-run` and `apply -f --dry-run`
  send each create as `POST ...?dry_run=true`: the server runs every check of
  a real create (validation, node lookup, allowlist, uniqueness, the default
  pool) and writes nothing, answering 200 with the object it would create.
  Each object prints `would create <obj>` (VMs with where they would land, or
  why they would stay pending), or `<obj>: refused: <why>` on stderr; a
  refusal exits 1. Each object is judged against what the server holds now,
  not against the other objects of the same run (a VM in the same manifest as
  its new pool shows `it would stay pending: pool_not_found`).
  `delete -f --dry-run` only lists what it would delete.
- **Paging**: a list with more results ends with a ready-to-run next-page
  command that repeats the filters and flags given (`otherix pool list
  --type local_dir --node a --cursor ...`; never the token).
- Prompts go to stderr and appear only when stdin is a terminal.
- Unknown `OTHERIX_` environment variables stop every command, as they stop
  the daemons (`docs/configuration.md`).
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

"""Helpers for the CLI suite: run ``otherix`` in-process, and shape server state.

``Cli`` drives the real click command against the real API server fixture
(``api`` from tests/conftest.py) with an injected ``CliContext`` (isolated
env, config file under tmp_path, simulated TTY). The other helpers set up
state through the public API the way an operator or an agent would: join a
node, create a pool, heartbeat as the node. ``add_vm_disk`` writes straight
to the store because VMs have no API yet.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from otherix.cli.context import CliContext
from otherix.cli.main import cli
from support import factories, rows
from support.factories import DIGEST as DIGEST
from support.factories import Node as Node
from support.factories import heartbeat_body
from support.factories import join_node as join_node


@dataclass
class Cli:
    """Runs ``otherix`` in-process against ``url`` with a config under ``home``."""

    url: str
    tokens: dict[str, str]
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.home / ".otherix" / "config"

    def raw(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        tty: bool = False,
        input: str | None = None,
        context: CliContext | None = None,
    ) -> Result:
        """Invoke with exactly ``args`` (no endpoint/token flags added)."""
        obj = context or CliContext()
        obj.env = {"HOME": str(self.home), **self.env, **(env or {})}
        obj.is_tty = tty
        return CliRunner().invoke(cli, list(args), obj=obj, input=input, prog_name="otherix")

    def __call__(self, *args: str, role: str = "admin", **kwargs: Any) -> Result:
        """Invoke as ``role`` with ``--endpoint``/``--token``/``--config`` flags."""
        flags = ["--endpoint", self.url, "--token", self.tokens[role]]
        flags += ["--config", str(self.config_path)]
        return self.raw(*flags, *args, **kwargs)


def ok(result: Result) -> str:
    """Assert success and return stdout (shows stderr on failure)."""
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return result.stdout


def failed(result: Result, code: int = 1) -> str:
    """Assert failure with ``code`` and return stderr."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result.stderr


def usage(result: Result) -> str:
    """Assert a usage error (exit 2, click's ``Usage:`` block) and return its ``Error:`` line."""
    err = failed(result, 2)
    assert err.startswith("Usage: otherix "), err
    assert "for help." in err, err
    return err.splitlines()[-1] + "\n"


# server state -----------------------------------------------------------------


def create_pool(api: Any, name: str, node: str, path: str) -> dict[str, Any]:
    with api.client("admin") as c:
        r = c.post(
            "/v1/storage-pools",
            json={"node": node, "name": name, "type": "local_dir", "path": path},
        )
        assert r.status_code == 201, r.text
        return dict(r.json())


def get_json(api: Any, path: str, role: str = "admin") -> Any:
    with api.client(role) as c:
        r = c.get(path)
        return r.status_code, r.json() if r.content else None


def heartbeat(api: Any, node: Node, pools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Report as the node's agent; a pending node becomes ready (and gets ``default``)."""
    with api.client(None) as c:
        r = c.post(
            f"/v1/nodes/{node.name}/heartbeat",
            json=heartbeat_body(pools, digest=DIGEST),
            headers=node.auth,
        )
        assert r.status_code == 200, r.text
        return dict(r.json())


#: A pool report with the CLI suites' sizes (100 B, 80 free).
pool_report = partial(factories.pool_report, capacity=100, available=80)


def report_when_created(
    api: Any, node: Node, pool: str, status: str = "ready", error: str | None = None
) -> threading.Thread:
    """In the background, wait until ``pool`` exists on ``node``, then report ``status``.

    Plays the agent for ``pool create --wait``: the report arrives while the
    CLI is polling.
    """

    def run() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            _, body = get_json(api, f"/v1/storage-pools?node={node.name}")
            if any(p["name"] == pool for p in body["data"]):
                time.sleep(0.2)  # let the CLI make at least one poll first
                heartbeat(api, node, [pool_report(pool, status, error)])
                return
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def add_vm_disk(api, pool_id: str, vm_name: str) -> None:
    """A VM row with one disk on ``pool_id``, owned by the admin (see support.rows)."""
    _, me = get_json(api, "/v1/users/me")
    rows.add_vm_disk(api.server.deps.db, pool_id, vm_name, owner_id=me["id"], phase="pending")


def table(text: str) -> list[dict[str, str]]:
    """Parse a kubectl-style table into one dict per row, by header positions."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0]
    names = header.split()
    starts = [header.index(f"{name}") for name in names]
    rows = []
    for line in lines[1:]:
        cells = [
            line[start : (starts[i + 1] if i + 1 < len(starts) else None)].strip()
            for i, start in enumerate(starts)
        ]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def play_scan_agent(
    api: Any,
    node: Node,
    pool_id: str,
    *,
    status: str = "success",
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> threading.Thread:
    """In the background, wait for a new scan task on ``pool_id`` and report it as the agent."""
    _, before = get_json(api, f"/v1/tasks?resource_id={pool_id}")
    known = {t["id"] for t in before["data"]}

    def run() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            _, body = get_json(api, f"/v1/tasks?resource_id={pool_id}")
            new = [t for t in body["data"] if t["id"] not in known]
            if new:
                time.sleep(0.2)  # let the CLI poll the pending task first
                update = {"status": status, "result": result, "error": error}
                with api.client(None) as c:
                    r = c.post(
                        f"/v1/nodes/{node.name}/tasks/{new[0]['id']}",
                        json=update,
                        headers={"Authorization": f"Bearer {node.credential}"},
                    )
                    assert r.status_code == 200, r.text
                return
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread

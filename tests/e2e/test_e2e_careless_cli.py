"""Careless input through the real ``otherix`` console script against a real
control plane (issue 13 items 8-10): each mistake gets one sentence and the
documented exit code, and nothing is changed behind the operator's back.

stdin is ``/dev/null`` (not a terminal) unless a test gives the CLI a real
pseudo-terminal (``pty``) to answer a prompt on. What is left on the server
is read back through the API or the store itself.
"""

from __future__ import annotations

import os
import pty
import shlex
import subprocess
from typing import Any

import pytest

from support.cli import OTHERIX, cli_env
from support.cli import run as otherix  # every call names the exit code it expects
from support.factories import Node, heartbeat_body, join_node
from support.rows import snapshot


def on_a_terminal(env, *args: str, answer: str) -> subprocess.CompletedProcess[str]:
    """Run with a real pseudo-terminal as stdin and type ``answer`` into it."""
    master, slave = pty.openpty()
    try:
        os.write(master, answer.encode())
        return subprocess.run(
            [OTHERIX, *args],
            env=dict(env),
            stdin=slave,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(slave)
        os.close(master)


def last_line(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


def status(api, path: str) -> int:
    with api.client("admin") as c:
        return c.get(path).status_code


def post(api, path: str, body: dict[str, Any], role: str = "admin") -> dict[str, Any]:
    with api.client(role) as c:
        r = c.post(path, json=body)
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


def heartbeat(api, node: Node, pools: list[dict[str, Any]] | None = None) -> None:
    body = heartbeat_body(pools, digest="0" * 64)
    with api.client(None) as c:
        r = c.post(f"/v1/nodes/{node.name}/heartbeat", json=body, headers=node.auth)
    assert r.status_code == 200, r.text


def vm_body(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image_url": "https://images.example/u.img", "arch": "amd64",
            "vcpus": 1, "memory_mb": 512, **extra}  # fmt: skip


def pool(api, name: str, node: str, path: str) -> dict[str, Any]:
    return post(
        api, "/v1/storage-pools", {"node": node, "name": name, "type": "local_dir", "path": path}
    )


@pytest.fixture
def env(api, tmp_path):
    return cli_env(api.url, api.tokens["admin"], tmp_path)


# destructive commands ------------------------------------------------------------------------


def test_destructive_commands_without_a_terminal_refuse_unless_forced(api, env, tmp_path):
    node = join_node(api, "node-a")
    fast = pool(api, "fast", "node-a", "/var/lib/otherix/pools/fast")
    vm = post(api, "/v1/vms", vm_body("web-1", pool="ghost"))
    user = post(api, "/v1/users", {"username": "carol", "password": "carol-pass-1"})
    token = post(api, "/v1/users/me/api-tokens", {"name": "ci"})
    join_token = post(api, "/v1/nodes/join-tokens", {})
    manifest = tmp_path / "fast.yaml"
    manifest.write_text(
        "apiVersion: otherix/v1\nkind: StoragePool\nmetadata: {name: fast}\n"
        "spec: {path: /var/lib/otherix/pools/fast, node: node-a}\n"
    )
    cases = [
        (("pool", "delete", "fast"), "delete pool fast", f"/v1/storage-pools/{fast['id']}"),
        (("vm", "delete", "web-1"), "delete vm web-1", "/v1/vms/web-1"),
        (("user", "delete", "carol"), "delete user carol", f"/v1/users/{user['id']}"),
        (("node", "delete", "node-a"), "delete node node-a", "/v1/nodes/node-a"),
        (("token", "revoke", token["id"]), f"revoke API token {token['id']}", None),
        (("node", "join-token", "delete", join_token["id"]),
         f"delete join token {join_token['id']}", None),
        (("cluster", "unset-default-pool"), "clear the cluster default pool",
         "/v1/cluster/default-pool"),
        (("delete", "-f", str(manifest)), "delete 1 objects", f"/v1/storage-pools/{fast['id']}"),
    ]  # fmt: skip
    before = snapshot(api.server.deps.db)
    for args, action, still_there in cases:
        r = otherix(env, *args, code=2)
        assert r.stdout == ""
        assert last_line(r.stderr) == (
            f"Error: refusing to {action} without confirmation: stdin is not a terminal; "
            f"pass --force to {action} without being asked"
        )
        if still_there:
            assert status(api, still_there) == 200, args
    assert snapshot(api.server.deps.db) == before  # nothing at all was written
    with api.client(None) as c:  # the token was not revoked
        me = c.get("/v1/users/me", headers={"Authorization": f"Bearer {token['token']}"})
    assert me.status_code == 200
    assert (vm["name"], node.name) == ("web-1", "node-a")

    # --force goes ahead, without a terminal
    assert otherix(env, "pool", "delete", "fast", "--force", code=0).stdout == "pool fast deleted\n"
    assert status(api, f"/v1/storage-pools/{fast['id']}") == 404


def test_a_declined_prompt_exits_1_and_changes_nothing(api, env):
    join_node(api, "node-a")
    fast = pool(api, "fast", "node-a", "/var/lib/otherix/pools/fast")
    for answer in ("n\n", "\n", "no\n", "sure\n"):
        r = on_a_terminal(env, "pool", "delete", "fast", answer=answer)
        assert r.returncode == 1, r.stderr
        assert r.stdout == ""
        assert r.stderr.startswith("delete storage pool fast? [y/N]: ")
        assert last_line(r.stderr).endswith("Error: aborted: did not delete pool fast")
        assert status(api, f"/v1/storage-pools/{fast['id']}") == 200
    r = on_a_terminal(env, "pool", "delete", "fast", answer="y\n")
    assert (r.returncode, r.stdout) == (0, "pool fast deleted\n")
    assert status(api, f"/v1/storage-pools/{fast['id']}") == 404


# usage errors and sentences ------------------------------------------------------------------


def test_usage_mistakes_exit_2_and_failures_read_as_sentences(api, env):
    join_node(api, "node-a")
    r = otherix(env, "pool", "list", "-o", "wider", code=2)
    assert r.stderr.startswith("Usage: otherix pool list [OPTIONS]\n")
    assert last_line(r.stderr) == (
        'Error: --output: unknown format "wider" (table, wide, json, yaml)'
    )
    assert last_line(otherix(env, "pool", "list", "--bogus", code=2).stderr) == (
        "Error: No such option '--bogus'."
    )
    r = otherix(env, "vm", "create", "web-1", "--image-url", "https://x/y.img",
                "--wait", "--wait-timeout", "soon", code=2)  # fmt: skip
    assert last_line(r.stderr).startswith('Error: --wait-timeout: invalid duration "soon"')
    assert status(api, "/v1/vms/web-1") == 404  # refused before anything was sent

    r = otherix(env, "pool", "get", "nosuch", code=1)
    assert (
        r.stderr == "Error: pool \"nosuch\" not found; run 'otherix pool list' to see the pools\n"
    )
    r = otherix(env, "pool", "create", "fast", "--node", "nosuch",
                "--path", "/var/lib/otherix/pools/fast", code=1)  # fmt: skip
    assert r.stderr == (
        "Error: node \"nosuch\" not found; run 'otherix node list' to see the nodes\n"
    )
    r = otherix(env, "vm", "get", "nosuch", code=1)
    assert r.stderr == "Error: VM \"nosuch\" not found; run 'otherix vm list' to see the VMs\n"
    r = otherix(env, "task", "get", "nosuch", code=1)
    assert (
        r.stderr == "Error: task \"nosuch\" not found; run 'otherix task list' to see the tasks\n"
    )
    r = otherix(env, "user", "delete", "nosuch", "--force", code=1)
    assert (
        r.stderr == "Error: user \"nosuch\" not found; run 'otherix user list' to see the users\n"
    )
    r = otherix(env, "pool", "list", "--node", "nosuch", code=1)
    assert r.stderr == (
        "Error: node \"nosuch\" not found; run 'otherix node list' to see the nodes\n"
    )
    debug = otherix(env, "--debug", "pool", "get", "nosuch", code=1)
    assert "debug: HTTP 404 not_found" in debug.stderr
    assert "Traceback (most recent call last):" in debug.stderr


# paging --------------------------------------------------------------------------------------


def test_the_next_page_hint_repeats_the_filters_and_runs_as_printed(api, env):
    join_node(api, "a")
    join_node(api, "b")
    for i in range(3):
        pool(api, f"p{i}", "a", f"/var/lib/otherix/pools/a{i}")
    pool(api, "other", "b", "/var/lib/otherix/pools/b0")
    first = otherix(env, "pool", "list", "--type", "local_dir", "--node", "a", "--limit", "1",
                    code=0).stdout  # fmt: skip
    hint = last_line(first).strip()
    assert hint.startswith("otherix pool list --node a --type local_dir --limit 1 --cursor ")
    names = [first.splitlines()[1].split()[0]]
    while True:  # follow the hints exactly as printed
        page = otherix(env, *shlex.split(hint)[1:], code=0).stdout
        names.append(page.splitlines()[1].split()[0])
        if "More results" not in page:
            break
        hint = last_line(page).strip()
        assert " --node a --type local_dir --limit 1 --cursor " in hint
    assert names == ["p0", "p1", "p2"]  # the other node's pool never shows up


# what task get and pool get say -------------------------------------------------------------


def test_task_attempts_are_what_the_node_tries(api, env):
    node = join_node(api, "node-a")
    heartbeat(api, node)
    room = {"capacity_bytes": 100 << 30, "available_bytes": 80 << 30}
    heartbeat(api, node, [{"name": "default", "reconciliation_status": "ready", **room}])
    vm = post(api, "/v1/vms", vm_body("web-1"), role="developer")
    task_id = vm["status"]["task_id"]
    assert task_id, vm
    out = otherix(env, "task", "get", task_id, code=0).stdout
    assert "attempts: 0/3\n" in out  # tasks.vm_create_attempts' documented default
    # The agent reports its own count and its configured limit.
    with api.client(None) as c:
        r = c.post(
            f"/v1/nodes/node-a/tasks/{task_id}",
            json={"status": "running", "progress": 1, "attempt": 2, "max_attempts": 5},
            headers=node.auth,
        )
        assert r.status_code == 200, r.text
    assert "attempts: 2/5\n" in otherix(env, "task", "get", task_id, code=0).stdout
    body = otherix(env, "task", "get", task_id, "-o", "json", code=0).stdout
    assert '"attempts": 2,' in body
    assert '"max_attempts": 5,' in body


def test_text_and_json_say_the_same_about_disk_pressure(api, env):
    import json

    node = join_node(api, "node-a")
    fast = pool(api, "fast", "node-a", "/var/lib/otherix/pools/fast")
    flat = json.loads(otherix(env, "pool", "get", fast["id"], "-o", "json", code=0).stdout)
    assert flat["disk_pressure"] is None
    assert "  disk: -\n" in otherix(env, "pool", "get", fast["id"], code=0).stdout  # never reported
    heartbeat(api, node, [{"name": "fast", "reconciliation_status": "ready",
                           "capacity_bytes": 100 << 30, "available_bytes": 80 << 30}])  # fmt: skip
    flat = json.loads(otherix(env, "pool", "get", fast["id"], "-o", "json", code=0).stdout)
    assert flat["disk_pressure"] is None
    text = otherix(env, "pool", "get", fast["id"], code=0).stdout
    assert "  disk: none\n" in text
    assert "ok" not in text

"""``create -f --dry-run`` and ``apply -f --dry-run`` through the real console
script ask the real server: what the server would refuse is reported as
refused (exit 1), what it would accept as ``would create``, and the store is
the same row for row afterwards.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from support.cli import cli_env
from support.rows import snapshot

OTHERIX = str(Path(sys.executable).parent / "otherix")
NODES_HINT = "run 'otherix node list' to see the nodes"
DUPLICATE = "already exists"


def otherix(env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OTHERIX, *args], env=env, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def pool_doc(name: str, path: str, *nodes: str) -> dict:
    return {
        "apiVersion": "otherix/v1",
        "kind": "StoragePool",
        "metadata": {"name": name},
        "spec": {"type": "local_dir", "path": path, "nodeList": list(nodes)},
    }


def join(api, name: str) -> None:
    with api.client("admin") as c:
        token = c.post("/v1/nodes/join-tokens", json={}).json()["token"]
    with api.client(None) as c:
        assert c.post("/v1/nodes/join", json={"join_token": token, "name": name}).status_code == 201


def create_pool(api, name: str, node: str, path: str) -> None:
    with api.client("admin") as c:
        body = {"node": node, "name": name, "type": "local_dir", "path": path}
        r = c.post("/v1/storage-pools", json=body)
    assert r.status_code == 201, r.text


def test_a_dry_run_reports_the_servers_refusals_and_writes_nothing(api, tmp_path):
    join(api, "node-a")
    create_pool(api, "taken", "node-a", "/var/lib/otherix/pools/taken")
    env = cli_env(api.url, api.tokens["admin"], tmp_path)
    manifest = tmp_path / "careless.yaml"
    manifest.write_text(
        yaml.safe_dump_all(
            [
                pool_doc("fast", "/var/lib/otherix/pools/fast", "node-a", "nosuch"),  # unknown node
                pool_doc("evil", "/etc/otherix", "node-a"),  # outside the allowlist
                pool_doc("taken", "/var/lib/otherix/pools/taken-2", "node-a"),  # name in use
                {
                    "apiVersion": "otherix/v1",
                    "kind": "VM",
                    "metadata": {"name": "web-1"},
                    "spec": {"imageURL": "https://images.example/u.img", "pool": "taken"},
                },
            ]
        )
    )
    before = snapshot(api.server.deps.db)
    r = otherix(env, "create", "-f", str(manifest), "--dry-run")
    assert r.returncode == 1, r.stderr
    assert r.stdout == (
        "would create StoragePool/fast on node-a\n"
        "would create VM/web-1 (it would stay pending: no_eligible_nodes: "
        "no eligible node available)\n"
    )
    assert r.stderr == (
        f'StoragePool/fast on nosuch: refused: node "nosuch" not found; {NODES_HINT}\n'
        "StoragePool/evil on node-a: refused: path is not on the storage_pools allowlist "
        f"(allowed prefixes: {api.server.settings.data_dir}/pools/, /var/lib/otherix/pools/)\n"
        f"StoragePool/taken on node-a: refused: {DUPLICATE}\n"
        "Error: dry run: 3 of 5 objects would be refused (nothing was created)\n"
    )
    assert snapshot(api.server.deps.db) == before

    plan = otherix(env, "apply", "-f", str(manifest), "--dry-run")
    assert plan.returncode == 1, plan.stderr
    assert plan.stdout.startswith("create StoragePool/fast on node-a\n")
    assert "StoragePool/fast on nosuch: refused: node" in plan.stderr
    assert "drift StoragePool/taken on node-a: path is /var/lib/otherix/pools/taken" in plan.stdout
    assert snapshot(api.server.deps.db) == before

    # A clean manifest passes the dry run, still writing nothing, then really creates.
    clean = tmp_path / "clean.yaml"
    clean.write_text(yaml.safe_dump(pool_doc("fast", "/var/lib/otherix/pools/fast", "node-a")))
    ok = otherix(env, "create", "-f", str(clean), "--dry-run")
    assert (ok.returncode, ok.stdout, ok.stderr) == (
        0, "would create StoragePool/fast on node-a\n", ""
    )  # fmt: skip
    assert snapshot(api.server.deps.db) == before
    real = otherix(env, "create", "-f", str(clean))
    assert (real.returncode, real.stdout) == (0, "created StoragePool/fast on node-a\n")


def test_a_dry_run_and_a_real_create_give_the_same_verdict(api, tmp_path):
    """Whatever the server's rules are (one directory, one pool on a node, for
    one), the dry run says what the create then does: both accept or both
    refuse, with the same words."""
    join(api, "node-a")
    create_pool(api, "base", "node-a", "/var/lib/otherix/pools/base")
    env = cli_env(api.url, api.tokens["admin"], tmp_path)
    cases = [
        pool_doc("inner", "/var/lib/otherix/pools/base/inner", "node-a"),  # inside another pool
        pool_doc("same", "/var/lib/otherix/pools/base/", "node-a"),  # the same directory
        pool_doc("outer", "/var/lib/otherix/pools", "node-a"),  # around it
        pool_doc("ok", "/var/lib/otherix/pools/elsewhere", "node-a"),
        pool_doc("base", "/var/lib/otherix/pools/base-2", "node-a"),  # the name is taken
    ]
    refused = 0
    for doc in cases:
        path = tmp_path / f"{doc['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        before = snapshot(api.server.deps.db)
        dry = otherix(env, "create", "-f", str(path), "--dry-run")
        assert snapshot(api.server.deps.db) == before
        real = otherix(env, "create", "-f", str(path))
        label = f"StoragePool/{doc['metadata']['name']} on node-a"
        if real.returncode == 0:
            assert (dry.returncode, dry.stdout) == (0, f"would create {label}\n")
        else:
            refused += 1
            assert dry.returncode == 1
            problem = real.stderr.splitlines()[0].removeprefix(f"{label}: ")
            assert dry.stderr.splitlines()[0] == f"{label}: refused: {problem}"
    assert refused >= 1  # the taken name at least

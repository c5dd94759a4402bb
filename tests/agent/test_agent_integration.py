"""Real control plane (uvicorn, SQLite) + real ``otherix-agent`` processes.

Runs as any user: without root the harness re-roots each node's pool paths
under its own directory instead of using a mount namespace (``node.mount_ns``).
"""

from __future__ import annotations

import signal
import stat
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from otherix.agent import state
from otherix.agent.fs import WRITE_PROBE_NAME
from otherix.agent.main import cli
from support.harness import FAST, Cluster, ControlPlane, wait_until

pytestmark = pytest.mark.slow

DEFAULT = "/var/lib/otherix/pools/default"
MARKER = ".otherix-pool.json"  # the pool identity marker (docs/architecture.md)


@pytest.fixture(scope="module")
def slow_cp(tmp_path_factory):
    """Heartbeats every 30 s: whatever happens faster came through the watch."""
    cp = ControlPlane(
        tmp_path_factory.mktemp("slow") / "api", overrides={"agents.heartbeat_interval": 30}
    ).start()
    yield cp
    cp.stop()


@pytest.fixture
def fast_cp(tmp_path):
    cp = ControlPlane(tmp_path / "api", overrides=FAST).start()
    yield cp
    cp.stop()


def admin(cp: ControlPlane) -> httpx.Client:
    return httpx.Client(
        base_url=cp.url, headers={"Authorization": f"Bearer {cp.admin_token}"}, timeout=15
    )


def join_token(cp: ControlPlane, **body) -> str:
    with admin(cp) as c:
        r = c.post("/v1/nodes/join-tokens", json={"ttl_seconds": 600, "max_uses": 1, **body})
        r.raise_for_status()
        return str(r.json()["token"])


def expired_join_token(cp: ControlPlane) -> str:
    from otherix.api.services import secrets
    from otherix.store.nodes import store as qn
    from otherix.store.ports.nodes import NewJoinToken

    token = secrets.new_token(secrets.JOIN_TOKEN_PREFIX)
    now = datetime.now(UTC)
    row = NewJoinToken(
        id=str(uuid.uuid4()),
        token_hash=secrets.digest(token),
        prefix=token[:12],
        description="expired",
        created_by=None,
        max_uses=1,
        created_at=now - timedelta(hours=2),
        expires_at=now - timedelta(hours=1),
    )
    assert cp.server is not None
    with cp.server.deps.db.write() as conn:
        qn.insert_join_token(conn, row)
    return token


def bootstrap(cp: ControlPlane, data_dir: Path, token: str, name: str, *extra: str):
    args = ["bootstrap", "--server", cp.url, "--join-token", token, "--node-name", name]
    return CliRunner().invoke(cli, [*args, "--data-dir", str(data_dir), *extra])


def test_bootstrap_with_good_expired_exhausted_and_unknown_tokens(slow_cp, tmp_path) -> None:
    token = join_token(slow_cp)
    good = bootstrap(slow_cp, tmp_path / "a", token, "boot-a", "--architecture", "arm64")
    assert good.exit_code == 0, good.output
    assert good.stdout.startswith("enrolled node boot-a (")
    saved = state.load(tmp_path / "a")
    assert saved is not None
    assert (saved.node_name, saved.server, saved.architecture) == ("boot-a", slow_cp.url, "arm64")
    assert saved.credential.startswith("otxn_")
    assert stat.S_IMODE((tmp_path / "a" / "node.json").stat().st_mode) == 0o600

    cases = {
        token: "error: join token has no uses left (create a new one with 'otherix node",
        expired_join_token(slow_cp): "error: join token has expired (create a new one with",
        "otxj_nope": "error: unknown join token (check the token",
    }
    for bad, message in cases.items():
        result = bootstrap(slow_cp, tmp_path / "b", bad, "boot-b")
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith(message), result.stderr
        assert state.load(tmp_path / "b") is None

    again = bootstrap(slow_cp, tmp_path / "a", join_token(slow_cp), "boot-c")
    assert again.exit_code == 1
    assert "already enrolled" in again.stderr
    forced = bootstrap(slow_cp, tmp_path / "a", join_token(slow_cp), "boot-c", "--force")
    assert forced.exit_code == 0, forced.output
    assert state.load(tmp_path / "a").node_name == "boot-c"  # type: ignore[union-attr]


def test_serve_default_pool_watch_create_and_delete(slow_cp, tmp_path) -> None:
    with Cluster(slow_cp, tmp_path) as cluster:
        node = cluster.add_node("serve-a")
        cluster.wait_node_status("serve-a", "ready", timeout=5)
        default = cluster.wait_pool_status("serve-a", "default", "ready", timeout=5)
        assert default["path"] == DEFAULT
        assert default["capacity_bytes"] > 0
        # the node says what its VMs run with (issue 15): `otherix node get` shows it
        caps = cluster.admin.get("/v1/nodes/serve-a").json()["capabilities"]
        assert caps["vm_accelerator"] in ("kvm", "tcg", "none"), caps
        assert (caps["vm_accelerator"] == "kvm") == ("vm_accelerator_reason" not in caps), caps
        root = node.host_path(DEFAULT)
        # the write probe exists for a moment in every reconcile pass
        names = sorted(p.name for p in root.iterdir() if p.name != WRITE_PROBE_NAME)
        assert names == [MARKER, "images", "scratch", "vms"]
        assert stat.S_IMODE(root.stat().st_mode) == 0o750

        # A new pool reaches ready through the watch, far faster than the 30 s heartbeat.
        started = time.monotonic()
        r = cluster.admin.post(
            "/v1/storage-pools",
            json={"node": "serve-a", "name": "fast", "type": "local_dir", "path": DEFAULT + "2"},
        )
        assert r.status_code == 201, r.text
        pool_id = r.json()["id"]

        def ready() -> bool:
            got = cluster.admin.get(f"/v1/storage-pools/{pool_id}").json()
            return got["reconciliation_status"] == "ready"

        wait_until(ready, timeout=5, what="pool fast ready")
        assert time.monotonic() - started < 1.0
        assert node.host_path(DEFAULT + "2/vms").is_dir()

        # Deleted on the CP: unregistered on the node, files kept.
        assert cluster.admin.delete(f"/v1/storage-pools/{pool_id}").status_code == 204
        node.wait_log("pool unregistered (CP-side delete reconciled) pool=fast", timeout=5)
        assert node.host_path(DEFAULT + "2/vms").is_dir()

        # SIGTERM while a 25 s watch is open: the agent exits 0 at once.
        started = time.monotonic()
        assert node.stop(timeout=5) == 0
        assert time.monotonic() - started < 3
        assert "agent stopped" in node.logs()


def test_kill9_goes_unreachable_and_restart_converges(fast_cp, tmp_path) -> None:
    with Cluster(fast_cp, tmp_path) as cluster:
        node = cluster.add_node("crash-a")
        before = cluster.wait_node_status("crash-a", "ready", timeout=5)
        cluster.wait_pool_status("crash-a", "default", "ready", timeout=5)
        node.kill(signal.SIGKILL)
        cluster.wait_node_status("crash-a", "unreachable", timeout=8)

        node.restart()
        after = cluster.wait_node_status("crash-a", "ready", timeout=8)
        assert after["id"] == before["id"]  # same enrolment: the state file survived
        assert node.state()["node_id"] == before["id"]
        pool = cluster.wait_pool_status("crash-a", "default", "ready", timeout=5)
        assert pool["reconciliation_error"] is None
        assert node.host_path(DEFAULT + "/images").is_dir()


def test_agent_reconnects_to_a_restarted_control_plane(fast_cp, tmp_path) -> None:
    with Cluster(fast_cp, tmp_path) as cluster:
        node = cluster.add_node("reco-a")
        cluster.wait_pool_status("reco-a", "default", "ready", timeout=5)
        fast_cp.restart(down_for=1.0)  # same data dir, same port
        node.wait_log("control plane unreachable", timeout=5)

        r = cluster.admin.post(
            "/v1/storage-pools",
            json={"node": "reco-a", "name": "after", "type": "local_dir", "path": DEFAULT + "3"},
        )
        assert r.status_code == 201, r.text
        cluster.wait_pool_status("reco-a", "after", "ready", timeout=8)
        cluster.wait_node_status("reco-a", "ready", timeout=5)
        assert node.logs().count("connected to the control plane") >= 2
        assert node.alive


def _join_direct(cp: ControlPlane, name: str) -> str:
    r = httpx.post(
        f"{cp.url}/v1/nodes/join",
        json={"join_token": join_token(cp), "name": name, "architecture": "amd64"},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["credential"])


def _report(**extra) -> dict:
    return {
        "agent_version": "0.1.0",
        "architecture": "amd64",
        "revision": 0,
        "pools": [],
        "digest": "0" * 64,
        **extra,
    }


def test_a_node_credential_cannot_heartbeat_as_another_node(slow_cp) -> None:
    cred_x = _join_direct(slow_cp, "imp-x")
    _join_direct(slow_cp, "imp-y")
    r = httpx.post(
        f"{slow_cp.url}/v1/nodes/imp-y/heartbeat",
        json=_report(),
        headers={"Authorization": f"Bearer {cred_x}"},
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"
    with admin(slow_cp) as c:
        assert c.get("/v1/nodes/imp-y").json()["status"] == "pending"


def test_heartbeat_with_unknown_fields_is_rejected_and_stores_nothing(slow_cp) -> None:
    cred = _join_direct(slow_cp, "strict-a")
    r = httpx.post(
        f"{slow_cp.url}/v1/nodes/strict-a/heartbeat",
        json=_report(agent_version="9.9.9", surprise=True),
        headers={"Authorization": f"Bearer {cred}"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "validation_failed"
    with admin(slow_cp) as c:
        node = c.get("/v1/nodes/strict-a").json()
        pools = c.get("/v1/storage-pools", params={"node": "strict-a"}).json()["data"]
    assert node["status"] == "pending"
    assert node["agent_version"] is None
    assert node["last_heartbeat_at"] is None
    assert pools == []


def test_cluster_runs_against_the_shared_api_fixture(api, tmp_path) -> None:
    # The conftest control plane's first allowed prefix is its own tmp dir.
    with Cluster(api, tmp_path) as cluster:
        node = cluster.add_node("fixture-a")
        pool = cluster.wait_pool_status("fixture-a", "default", "ready", timeout=8)
        assert pool["path"] == f"{api.server.settings.data_dir}/pools/default"
        assert node.host_path(pool["path"] + "/scratch").is_dir()

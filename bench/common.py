"""Shared benchmark plumbing: machine facts, a control plane in a subprocess
(so its CPU and RSS are its own), direct seeding through the store, stats."""

from __future__ import annotations

import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from otherix.api.services import secrets
from otherix.store import Database
from otherix.store.migrate import upgrade
from otherix.store.tx import sql

ADMIN = ("admin", "bench-password-1")


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()} | {os.cpu_count()} cores {cpu} | {mem:.0f} GiB | Python {platform.python_version()}"


def pct(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": pct(values, 50) * 1000,
        "p99_ms": pct(values, 99) * 1000,
        "mean_ms": statistics.fmean(values) * 1000 if values else float("nan"),
    }


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident set (``VmRSS``) or its peak (``VmHWM``) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def headline(
    metric: str,
    figure: str,
    *,
    target: str = "-",
    baseline: str = "-",
    met: bool | None = None,
) -> dict[str, str]:
    """One row of the runner's combined table: the figure, its target, and the
    baseline measured in the same run. ``met`` is None where there is no target."""
    verdict = "-" if met is None else ("met" if met else "**MISSED**")
    return {
        "metric": metric,
        "figure": figure,
        "target": target,
        "baseline (same run)": baseline,
        "verdict": verdict,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ControlPlane:
    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.data_dir}/otherix.db"

    def token(self) -> str:
        r = httpx.post(
            f"{self.url}/v1/auth/login",
            json=dict(zip(("username", "password"), ADMIN, strict=True)),
        )
        r.raise_for_status()
        return str(r.json()["access_token"])

    def rss_mib(self) -> float:
        return rss_mib(self.proc.pid)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        stop_process(self.proc)


def start_control_plane(
    data_dir: Path, extra_env: dict[str, str] | None = None, command: list[str] | None = None
) -> ControlPlane:
    """``otherix-api serve`` (or ``command``, which takes the same arguments) on a free port."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "OTHERIX_BOOTSTRAP_ADMIN_USERNAME": ADMIN[0],
        "OTHERIX_BOOTSTRAP_ADMIN_PASSWORD": ADMIN[1],
        "OTHERIX_STORAGE_POOLS__ALLOWED_PATH_PREFIXES": f'["{data_dir}/pools/", "/var/lib/otherix/pools/"]',
        **(extra_env or {}),
    }
    exe = command or [str(Path(sys.executable).parent / "otherix-api")]
    proc = subprocess.Popen(
        [*exe, "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(data_dir / "api.log").open("wb"),
    )
    cp = ControlPlane(data_dir, port, proc)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{cp.url}/healthz", timeout=1).status_code == 200:
                return cp
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"control plane exited; see {data_dir}/api.log")
        time.sleep(0.1)
    raise RuntimeError("control plane did not start")


def seed_nodes(
    db_url: str, count: int, pools_per_node: int, *, ready: bool = True
) -> list[dict[str, Any]]:
    """Insert nodes (with known credentials) and their pools straight into the store,
    in bulk (executemany), so 100k pool instances take seconds, not minutes.
    Ready nodes get a heartbeat time of now, so they are running nodes whose
    first report is due (not nodes that went unreachable an hour ago and must
    be promoted and given a default pool first)."""
    from otherix.store.schema import node_observed, nodes, pool_status, storage_pools

    db = Database(db_url)
    upgrade(db)
    seeded_at = datetime.now(UTC)
    base = seeded_at - timedelta(hours=1)
    node_rows, observed, pool_rows, status_rows, out = [], [], [], [], []
    for i in range(count):
        node_id = str(uuid.uuid4())
        cred = f"{secrets.NODE_CREDENTIAL_PREFIX}bench{i:07d}{uuid.uuid4().hex}"
        now = base + timedelta(microseconds=i * 100)
        name = f"node-{i:06d}"
        node_rows.append(
            {
                "id": node_id,
                "name": name,
                "name_lower": name,
                "status": "ready" if ready else "pending",
                "cordoned": False,
                "architecture": "amd64",
                "credential_hash": secrets.digest(cred),
                "desired_revision": 1,
                "created_at": now,
                "updated_at": now,
                "status_changed_at": now,
                "last_heartbeat_at": seeded_at if ready else None,
            }
        )
        observed.append(
            {"node_id": node_id, "capabilities": {}, "resources": {}, "updated_at": now}
        )
        for j in range(pools_per_node):
            pool_id = str(uuid.uuid4())
            pool_rows.append(
                {
                    "id": pool_id,
                    "node_id": node_id,
                    "name": f"pool-{j}",
                    "name_lower": f"pool-{j}",
                    "type": "local_dir",
                    "path": f"/var/lib/otherix/pools/pool-{j}",
                    "config": {},
                    "created_at": now + timedelta(microseconds=j),
                    "updated_at": now,
                }
            )
            status_rows.append({"pool_id": pool_id, "reconciliation_status": "ready", "images": []})
        out.append({"id": node_id, "name": name, "credential": cred})
    with db.write() as conn:
        for table_, rows in (
            (nodes, node_rows),
            (node_observed, observed),
            (storage_pools, pool_rows),
            (pool_status, status_rows),
        ):
            for k in range(0, len(rows), 5000):
                sql(conn).execute(table_.insert(), rows[k : k + 5000])
    db.close()
    return out


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[k]) for k in keys) + " |")
    return "\n".join(lines)


BIN = Path(sys.executable).parent


def start_agent(
    cp: ControlPlane,
    token: str,
    work: Path,
    name: str,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Enrol a real ``otherix-agent`` (join token, bootstrap) and start it; returns
    once the node is ``ready``. Its pools may live under ``{cp.data_dir}/pools/``."""
    env = {
        **os.environ,
        "OTHERIX_STORAGE__ALLOWED_PATH_PREFIXES": f'["{cp.data_dir}/pools/"]',
        **(extra_env or {}),
    }
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=cp.url, headers=auth) as c:
        jt = c.post("/v1/nodes/join-tokens", json={}).json()["token"]
    data_dir = work / f"agent-{name}"
    subprocess.run(
        [
            str(BIN / "otherix-agent"),
            "bootstrap",
            "--server",
            cp.url,
            "--join-token",
            jt,
            "--node-name",
            name,
            "--data-dir",
            str(data_dir),
        ],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    agent = subprocess.Popen(
        [str(BIN / "otherix-agent"), "serve", "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(work / f"agent-{name}.log").open("wb"),
    )
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=cp.url, headers=auth) as c:
        while time.monotonic() < deadline:
            r = c.get(f"/v1/nodes/{name}")
            if r.status_code == 200 and r.json()["status"] == "ready":
                return agent
            if agent.poll() is not None:
                raise RuntimeError(f"agent exited; see {work}/agent-{name}.log")
            time.sleep(0.1)
    agent.kill()
    raise RuntimeError("agent did not become ready")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)

"""Time to full (issue 16.6) end to end: a real ``otherix-agent`` measures a real pool
on a tmpfs of fixed size, the control plane samples it every second, and the pool's
view shows ``pool_filling`` while files fill the tmpfs fast and drops it once they
stop. Root only (the tmpfs), slow (real time)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from support.harness import FAST, Cluster, ControlPlane, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.root]

MiB = 1 << 20
POOL = "/var/lib/otherix/pools/fillfs/fill"


def _mount_tmpfs(target: Path, size: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")


def test_a_real_pool_filling_fast_shows_pool_filling_until_it_stops(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    overrides = {
        **FAST,
        "capacity.sample_interval": "1s",
        "capacity.trend_window": "4s",
        "capacity.retention": "1m",
    }
    cp = ControlPlane(tmp_path / "api", overrides=overrides).start()
    mounted: Path | None = None
    try:
        with Cluster(cp, tmp_path) as cluster:
            node = cluster.add_node("node-a", mount_ns=False)  # the tmpfs is the host's
            cluster.wait_node_status("node-a", "ready")
            mounted = root = node.host_path("/var/lib/otherix/pools/fillfs")
            _mount_tmpfs(root, "64M")
            r = cluster.admin.post(
                "/v1/storage-pools", json={"node": "node-a", "name": "fill", "path": POOL}
            )
            assert r.status_code == 201, r.text
            pool_id = r.json()["id"]
            cluster.wait_pool_status("node-a", "fill", "ready", timeout=20)

            def view() -> dict:
                got = cluster.admin.get(f"/v1/storage-pools/{pool_id}")
                got.raise_for_status()
                return dict(got.json())

            def types(body: dict) -> list[str]:
                return [c["type"] for c in body["conditions"]]

            written = [0]

            def fill_and_look() -> dict | None:
                if written[0] < 40 * MiB:  # 64 MiB: never full, only filling fast
                    name = root / "fill" / f"blob-{written[0] // MiB}"
                    name.write_bytes(b"\x01" * (2 * MiB))
                    written[0] += 2 * MiB
                body = view()
                return body if "pool_filling" in types(body) else None

            filling = wait_until(fill_and_look, 40, "pool_filling while the tmpfs fills")
            trend = filling["capacity_trend"]
            assert trend["state"] == "filling"
            assert trend["bytes_per_day"] > 0
            assert trend["days_to_full"] < 7
            assert trend["available_bytes"] <= filling["capacity_bytes"]
            history = cluster.admin.get(f"/v1/storage-pools/{pool_id}/capacity-history").json()
            assert len(history["samples"]) >= 3
            assert history["samples"][0]["capacity_bytes"] == filling["capacity_bytes"]

            # the writes stop: once the window holds only flat samples, the condition goes
            def flat() -> dict | None:
                body = view()
                done = body["capacity_trend"]["state"] == "not_filling"
                return body if done and "pool_filling" not in types(body) else None

            wait_until(flat, 40, "not_filling once the writes stopped")
    finally:
        cp.stop()
        if mounted is not None:
            subprocess.run(["umount", "-l", str(mounted)], check=False, capture_output=True)

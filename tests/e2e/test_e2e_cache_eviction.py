"""Cache eviction on a real cluster, with the real CLI (issue 16, deliverable 2): a pool's
``config.cache`` limits make its agent evict the least recently used images no running
VM needs; a running VM's image stays, a pinned one stays, each eviction is a node event,
and a VM whose image went still boots from its own disk (disks never depend on the cache).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from support.cli import cli_env, run
from support.harness import FAST, Cluster, ControlPlane, wait_until
from support.images import ImageOrigin

pytestmark = [pytest.mark.slow]  # TCG boots of a real kernel

AGENT = {"images": {"allow_loopback_and_link_local": True}}


def _cached(env: dict[str, str]) -> list[str]:
    view = json.loads(run(env, "pool", "cache", "list", "default", "-o", "json").stdout)
    return sorted(i["name"] for i in view["images"])


def test_eviction_keeps_what_running_vms_use_and_frees_the_rest(
    tmp_path: Path, test_guest: Path
) -> None:
    other = tmp_path / "other.qcow2"
    shutil.copyfile(test_guest, other)
    with other.open("ab") as fh:  # other bytes, still a bootable qcow2
        fh.write(b"\0" * 4096)
    small = tmp_path / "small.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(small), "8M"], check=True)
    cp = ControlPlane(tmp_path / "api", overrides=FAST).start()
    try:
        with ImageOrigin() as origin, Cluster(cp, tmp_path, agent_config=AGENT) as cluster:
            node = cluster.add_node("node-a", runs_vms=True)
            cluster.wait_pool_status("node-a", "default", "ready", timeout=20)
            env = cli_env(cp.url, cp.admin_token, tmp_path)
            urls = {
                "run.qcow2": origin.serve("/run.qcow2", test_guest.read_bytes()),
                "stop.qcow2": origin.serve("/stop.qcow2", other.read_bytes()),
                "pin.qcow2": origin.serve("/pin.qcow2", small.read_bytes()),
                "gone.qcow2": origin.serve("/gone.qcow2", small.read_bytes() + b"\0" * 512),
            }
            small_vm = ("--vcpus", "1", "--memory-mb", "256", "--wait")
            run(env, "vm", "create", "running", "--image-url", urls["run.qcow2"], *small_vm)
            run(env, "vm", "create", "idle", "--image-url", urls["stop.qcow2"], "--no-start",
                *small_vm)  # fmt: skip
            for name in ("pin.qcow2", "gone.qcow2"):
                run(env, "vm", "create", f"tmp-{name[:3]}", "--image-url", urls[name],
                    "--no-start", *small_vm)  # fmt: skip
                run(env, "vm", "delete", f"tmp-{name[:3]}", "--force", "--wait")
            wait_until(lambda: len(_cached(env)) == 4 or None, timeout=30, what="4 images")
            listed = run(env, "pool", "cache", "list", "default").stdout
            assert "running" in listed  # the VMS column of run.qcow2
            run(env, "pool", "cache", "pin", "default", "pin.qcow2")
            nothere = run(env, "pool", "cache", "pin", "default", "nothere.qcow2", ok=False)
            assert "is not in the cache" in nothere.stderr

            dry = run(env, "pool", "cache", "prune", "default", "--dry-run", "--wait").stdout
            # min_age (1h by default) protects everything used just now
            assert "would evict 0 image(s)" in dry
            assert len(_cached(env)) == 4

            # a cap of one byte, no minimum age: everything that may go, goes
            body = {"config": {"cache": {"max_bytes": 1, "min_age": 0,
                                         "pinned": ["pin.qcow2"]}}}  # fmt: skip
            pool_id = json.loads(run(env, "pool", "get", "default", "-o", "json").stdout)
            instance = pool_id["instances"][0]["id"] if "instances" in pool_id else pool_id["id"]
            r = cluster.admin.patch(f"/v1/storage-pools/{instance}", json=body)
            assert r.status_code == 200, r.text
            wait_until(
                lambda: _cached(env) == ["pin.qcow2", "run.qcow2"] or None,
                timeout=30,
                what="eviction",
            )
            images = node.host_path("/var/lib/otherix/pools/default/images")
            assert sorted(p.name for p in images.iterdir()) == sorted(
                f"{n}{s}" for n in ("pin.qcow2", "run.qcow2") for s in ("", ".sha256", ".source")
            )

            def evicted() -> list[dict[str, Any]] | None:
                events = cluster.node("node-a")["events"]
                found = [e for e in events if e["reason"] == "image_evicted"]
                return found if len(found) == 2 else None

            events = wait_until(evicted, timeout=20, what="two image_evicted events")
            assert sorted(e["details"]["image"] for e in events) == ["gone.qcow2", "stop.qcow2"]
            assert {e["details"]["reason"] for e in events} == {"max_bytes"}

            # the VM whose image went still boots: its disk is its own
            run(env, "vm", "start", "idle", "--wait")
            wait_until(
                lambda: "OTHERIX-GUEST-UP" in run(env, "vm", "console", "idle").stdout or None,
                timeout=90,
                what="idle booted",
            )
    finally:
        cp.stop()

"""``otherix pool doctor`` and ``otherix vm import`` end to end: the real ``otherix``
console script against a real control plane and a real ``otherix-agent`` process, on a
real pool directory (issue 16, drift).

An operator moves a VM's directory away (its disk is missing, the moved copy an
orphan), leaves an old VM directory behind and a stray scratch file; ``pool doctor``
shows all of them with their action, ``vm import`` adopts the orphan (same bytes,
sha256), a purge that raced an import leaves the adopted file alone, and ``--purge
--force`` removes the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from support.cli import cli_env, run
from support.clustervms import Pool, create_vm, get_vm, one_node, wait_phase
from support.harness import FAST, wait_until
from support.images import ImageOrigin, qcow2

pytestmark = pytest.mark.slow

#: liveness slow enough for the agent to be paused for a moment
OVERRIDES = {**FAST, "workers.heartbeat.stale_threshold": 30}
#: drift scanned every second (storage.usage_interval), images from the loopback origin
AGENT = {"images": {"allow_loopback_and_link_local": True}, "storage": {"usage_interval": 1}}
OLD = time.time() - 2 * 3600


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def doctor(env: dict[str, str]) -> dict[str, Any]:
    out = run(env, "pool", "doctor", "dp", "--node", "node-a", "-o", "json").stdout
    return dict(json.loads(out))


def wait_items(env: dict[str, str], paths: set[str]) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        view = doctor(env)
        return view if paths <= {i["path"] for i in view["items"]} else None

    return wait_until(check, 30, f"doctor showing {sorted(paths)}")


def test_doctor_shows_drift_import_adopts_and_purge_removes_only_drift(tmp_path: Path) -> None:
    image = qcow2(tmp_path, "base.qcow2")
    with (
        ImageOrigin() as origin,
        one_node(tmp_path, overrides=OVERRIDES, agent_config=AGENT) as (cluster, node),
    ):
        origin.serve("/img/base.qcow2", image)
        token = cluster.admin.headers["authorization"].split()[1]
        env = cli_env(str(cluster.admin.base_url), token, tmp_path)
        pool = Pool(cluster, node, "dp")
        lost = create_vm(cluster, "lost", pool, origin.url_for("/img/base.qcow2"),
                         power_state="stopped")  # fmt: skip
        wait_phase(cluster, "lost", "stopped")

        # the operator moves lost's directory: lost's disk is missing, the copy an orphan
        a = str(uuid.uuid4())
        os.rename(pool.vm_dir(lost["id"]), pool.root / "vms" / a)
        orphan_a = f"vms/{a}/disk.qcow2"
        want_a = sha(pool.root / orphan_a)
        b = str(uuid.uuid4())
        (pool.root / "vms" / b).mkdir()
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                        str(pool.root / "vms" / b / "disk.qcow2"), "2M"], check=True)  # fmt: skip
        orphan_b = f"vms/{b}/disk.qcow2"
        want_b = sha(pool.root / orphan_b)
        junk = pool.root / "vms" / "old-vm" / "disk.raw"
        junk.parent.mkdir()
        junk.write_bytes(b"\x00" * 4096)
        stray = pool.root / "scratch" / "left.tmp"
        stray.write_bytes(b"left by someone")
        os.utime(stray, (OLD, OLD))

        view = wait_items(env, {orphan_a, orphan_b, "vms/old-vm/disk.raw", "scratch/left.tmp"})
        kinds = {i["path"]: i["kind"] for i in view["items"]}
        assert kinds["scratch/left.tmp"] == "stray"
        assert kinds[orphan_a] == "orphan"
        [missing] = [i for i in view["items"] if i["kind"] == "missing"]
        assert (missing["vm"], missing["path"]) == ("lost", f"vms/{lost['id']}/disk.qcow2")
        text = run(env, "pool", "doctor", "dp", "--node", "node-a").stdout
        assert f"otherix vm import NAME --pool dp --node node-a --disk {orphan_a}" in text
        assert "restore the file, or delete the VM: otherix vm delete lost" in text

        # bad imports are refused with a clear error, nothing moved
        refused = run(env, "vm", "import", "x", "--pool", "dp", "--node", "node-a",
                      "--disk", "/etc/passwd", ok=False)  # fmt: skip
        assert "is not inside pool 'dp'" in refused.stderr
        refused = run(env, "vm", "import", "x", "--pool", "dp", "--node", "node-a",
                      "--disk", "images/base.qcow2", ok=False)  # fmt: skip
        assert "only an orphan disk of the pool's vms/ or scratch/" in refused.stderr

        # adopt a: the same bytes, now the disk of a stopped VM
        out = run(env, "vm", "import", "adopted", "--pool", "dp", "--node", "node-a",
                  "--disk", f"{pool.path}/{orphan_a}", "--wait").stdout  # fmt: skip
        adopted = get_vm(cluster, "adopted")
        assert adopted["status"]["phase"] == "stopped"
        disk = pool.vm_dir(adopted["id"]) / "disk.qcow2"
        assert sha(disk) == want_a
        assert "vm adopted imported: qcow2 disk of" in out
        taken = run(env, "vm", "import", "adopted", "--pool", "dp", "--node", "node-a",
                    "--disk", orphan_b, ok=False)  # fmt: skip
        assert "already exists" in taken.stderr

        # a purge of b accepted while an import of b is on its way: the agent (paused
        # meanwhile, so both tasks wait for it) adopts b first, the purge then keeps it
        assert node.proc is not None
        os.killpg(node.proc.pid, signal.SIGSTOP)
        try:
            r = cluster.admin.post("/v1/vms/import", json={
                "name": "adopted-2", "pool": "dp", "node": "node-a", "disk": orphan_b})  # fmt: skip
            assert r.status_code == 201, r.text
            r = cluster.admin.post(f"/v1/storage-pools/{pool.id}/drift/purge",
                                   json={"paths": [orphan_b]})  # fmt: skip
            assert r.status_code == 202, r.text
            purge_task = r.json()["task_id"]
        finally:
            os.killpg(node.proc.pid, signal.SIGCONT)
        wait_phase(cluster, "adopted-2", "stopped")
        task = wait_until(
            lambda: (t := cluster.admin.get(f"/v1/tasks/{purge_task}").json())["status"]
            in ("success", "failed") and t, 30, "purge done",
        )  # fmt: skip
        assert task["status"] == "success", task
        assert task["result"]["removed"] == []
        assert task["result"]["kept"] == [{"path": orphan_b, "reason": "not_drift"}]
        adopted_2 = get_vm(cluster, "adopted-2")
        assert sha(pool.vm_dir(adopted_2["id"]) / "disk.qcow2") == want_b

        # purge the rest: the stray and the old VM directory go, the VMs' disks stay
        wait_until(lambda: orphan_b not in {i["path"] for i in doctor(env)["items"]}, 30,
                   "b no longer an orphan")  # fmt: skip
        out = run(env, "pool", "doctor", "dp", "--node", "node-a", "--purge", "--force",
                  "--wait").stdout  # fmt: skip
        assert "removed scratch/left.tmp (15B)" in out
        assert "removed vms/old-vm/disk.raw (4.0KiB)" in out
        assert not stray.exists()
        assert not junk.parent.exists()
        assert sha(disk) == want_a
        assert sha(pool.vm_dir(adopted_2["id"]) / "disk.qcow2") == want_b

        def only_missing() -> dict[str, Any] | None:
            view = doctor(env)
            return view if len(view["items"]) == 1 else None

        final = wait_until(only_missing, 30, "only the missing disk left")
        assert [i["kind"] for i in final["items"]] == ["missing"]

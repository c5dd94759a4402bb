"""``otherix pool cache quarantine list|clear`` and cancelling a running ``pool scrub``,
against the real server and a real ``otherix-agent`` process on a real pool (the
damaged entries are written into its ``images/`` by hand: an image whose bytes no
longer match its sidecar)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from clihelpers import failed, ok

from support.clustervms import Pool
from support.harness import Cluster, wait_until

pytestmark = pytest.mark.slow  # a real agent process per test

MiB = 1 << 20


def _entry(images: Path, name: str, data: bytes, *, damaged: bool = False) -> None:
    digest = hashlib.sha256(data).hexdigest()
    source = {"url": f"http://origin.invalid/{name}", "aliases": [], "sha256": digest,
              "format": "raw", "size_bytes": len(data), "virtual_size_bytes": len(data),
              "imported_at": "2026-12-01T00:00:00Z"}  # fmt: skip
    (images / name).write_bytes(bytes([data[0] ^ 1]) + data[1:] if damaged else data)
    (images / f"{name}.source").write_text(json.dumps(source))
    (images / f"{name}.sha256").write_text(digest)


@pytest.fixture
def pool(api, tmp_path) -> Iterator[Pool]:
    with Cluster(api, tmp_path) as cluster:
        node = cluster.add_node("node-a")
        cluster.wait_node_status("node-a", "ready", timeout=20)
        yield Pool(cluster, node, "q")


def _quarantine_dirs(pool: Pool) -> list[str]:
    base = pool.root / "quarantine"
    return sorted(os.listdir(base)) if base.is_dir() else []


def test_quarantined_entries_are_listed_then_cleared_on_the_node(cli, pool) -> None:
    images = pool.root / "images"
    for name in ("bad-a.img", "bad-b.img"):
        _entry(images, name, os.urandom(4096), damaged=True)
    _entry(images, "good.img", os.urandom(4096))
    out = ok(cli("pool", "scrub", "q", "--node", "node-a", "--wait"))
    assert out.endswith("scrubbed 3 image(s), 12.0KiB: 2 quarantined\n"), out
    assert [d.split(".img.")[0] for d in _quarantine_dirs(pool)] == ["bad-a", "bad-b"]

    def listed() -> str | None:
        text = ok(cli("pool", "cache", "quarantine", "list", "q", "--node", "node-a"))
        return text if "2 quarantined" in text else None

    table = wait_until(listed, 15, "the quarantine listed")
    assert "bad-a.img" in table
    assert "bad-b.img" in table
    assert "good.img" not in table
    as_json = json.loads(ok(cli("pool", "cache", "quarantine", "list", "q", "-o", "json")))
    assert sorted(q["image"] for q in as_json["quarantined"]) == ["bad-a.img", "bad-b.img"]

    # not listed: refused, nothing asked of the agent
    nothere = failed(cli("pool", "cache", "quarantine", "clear", "q", "good.img", "--force"))
    assert nothere.startswith('Error: image good.img is not in the quarantine of pool "q"')
    # a prompt declined, and no terminal without --force: nothing deleted
    declined = cli("pool", "cache", "quarantine", "clear", "q", "bad-a.img", tty=True, input="n\n")
    assert declined.exit_code == 1, declined.output
    assert "will delete quarantine/bad-a.img." in declined.stderr
    assert cli("pool", "cache", "quarantine", "clear", "q").exit_code == 2
    assert len(_quarantine_dirs(pool)) == 2

    out = ok(cli("pool", "cache", "quarantine", "clear", "q", "bad-a.img", "--force", "--wait"))
    assert out.endswith("deleted 1 quarantined entry\n"), out
    assert [d.split(".img.")[0] for d in _quarantine_dirs(pool)] == ["bad-b"]
    wait_until(
        lambda: "1 quarantined" in ok(cli("pool", "cache", "quarantine", "list", "q")) or None,
        15,
        "the report to drop bad-a.img",
    )
    out = ok(cli("pool", "cache", "quarantine", "clear", "q", "--wait", tty=True, input="y\n"))
    assert out.endswith("deleted 1 quarantined entry\n"), out
    assert _quarantine_dirs(pool) == []
    assert (images / "good.img.sha256").is_file()  # never in quarantine, never touched
    wait_until(
        lambda: "0 quarantined" in ok(cli("pool", "cache", "quarantine", "list", "q")) or None,
        15,
        "the report to list nothing",
    )
    assert ok(cli("pool", "cache", "quarantine", "clear", "q", "--force")) == (
        "nothing is quarantined in pool q\n"
    )


def test_cancelling_a_running_scrub_stops_the_agent_scrubbing(cli, pool) -> None:
    r = pool.cluster.admin.patch(
        f"/v1/storage-pools/{pool.id}",
        json={"config": {"scrub": {"interval": 0, "max_bytes_per_second": MiB}}},
    )
    assert r.status_code == 200, r.text
    images = pool.root / "images"
    for n in range(3):  # 3 x 16 MiB at 1 MiB/s: 48 s if it ran to the end
        _entry(images, f"big-{n}.img", os.urandom(16 * MiB), damaged=n == 2)
    queued = ok(cli("pool", "scrub", "q", "--node", "node-a"))
    task_id = queued.rsplit("task ", 1)[1].strip()

    def running() -> dict | None:
        r = pool.cluster.admin.get(f"/v1/tasks/{task_id}")
        result = r.json().get("result") or {}
        return result if result.get("bytes_done") else None

    wait_until(running, 20, "the scrub running on the agent")
    assert ok(cli("task", "cancel", task_id)) == f"task {task_id} cancelled\n"
    node = pool.cluster.nodes["node-a"]
    node.wait_log("scrub stopped before the end", timeout=15)
    stopped = next(ln for ln in node.logs().splitlines() if "scrub stopped before" in ln)
    assert "bytes_total=50331648" in stopped
    done = int(stopped.split("bytes_done=")[1].split()[0])
    assert 0 < done < 32 * MiB, stopped  # it never reached the damaged third entry
    task = pool.cluster.admin.get(f"/v1/tasks/{task_id}").json()
    assert task["status"] == "cancelled"
    assert not (pool.root / ".otherix-scrub.json").exists()  # written when a scrub completes
    assert _quarantine_dirs(pool) == []
    assert all((images / f"big-{n}.img.sha256").is_file() for n in range(3))
    # a finished task cannot be cancelled again; the scrubber still takes new work
    again = failed(cli("task", "cancel", task_id))
    assert "already finished" in again
    r = pool.cluster.admin.patch(
        f"/v1/storage-pools/{pool.id}",
        json={"config": {"scrub": {"interval": 0, "max_bytes_per_second": 1 << 30}}},
    )
    assert r.status_code == 200, r.text
    out = ok(cli("pool", "scrub", "q", "--node", "node-a", "--wait"))
    assert out.endswith("48.0MiB: 1 quarantined\n"), out

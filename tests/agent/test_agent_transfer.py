"""The disk transfer of a move across nodes (``otherix.agent.transfer`` and
``vmmove.pull``): the endpoint serves only ticketed disks to the ticket's secret, resumes
with ``Range``, forgets a revoked ticket, never follows a symlinked disk; the pull resumes
after a dropped connection and publishes nothing whose sha256 differs.

Real HTTP on loopback (the agent's own ``TransferServer``, and for the faults a small
server of this file that cuts the connection or sends other bytes), real pools in a real
``PoolState``, a real qcow2.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from otherix.agent import vmmove
from otherix.agent.fs import ProtectedRoots
from otherix.agent.images import ImageCache, KeyedLocks, ScratchArea
from otherix.agent.pools import PoolReconciler
from otherix.agent.report import PoolState
from otherix.agent.transfer import TransferServer
from otherix.agent.vmwork import TaskFailure
from otherix.models.heartbeat import AgentTask, DeclaredPool

SRC, DST = "/var/lib/otherix/pools/tsrc", "/var/lib/otherix/pools/tdst"
MiB = 1 << 20
SECRET = "s3cret-for-this-ticket"


class Cache:
    def __init__(self, protected: ProtectedRoots) -> None:
        self.protected = protected
        self.locks = KeyedLocks()
        self.scratch = ScratchArea(protected)


class Env:
    def __init__(self, tmp_path: Path) -> None:
        host = tmp_path / "host"
        protected = ProtectedRoots()
        self.pools = PoolState(
            PoolReconciler(protected=protected),
            allowed_prefixes=["/var/lib/otherix/pools/"],
            host_root=host,
        )
        self.pools.reconcile(
            [
                DeclaredPool(name="tsrc", type="local_dir", path=SRC),
                DeclaredPool(name="tdst", type="local_dir", path=DST),
            ]
        )
        self.cache = cast(ImageCache, Cache(protected))
        self.vm = str(uuid.uuid4())
        self.src = Path(str(host) + SRC) / "vms" / self.vm / "disk.qcow2"
        self.dst = Path(str(host) + DST) / "vms" / self.vm / "disk.qcow2"
        self.src.parent.mkdir(parents=True)
        raw = tmp_path / "d.raw"
        with raw.open("wb") as fh:  # data, a 4 MiB hole, data
            fh.write(os.urandom(3 * MiB))
            fh.seek(7 * MiB)
            fh.write(os.urandom(MiB))
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(self.src)],
            check=True,
            timeout=60,
        )
        self.data = self.src.read_bytes()
        self.sha = hashlib.sha256(self.data).hexdigest()
        self.ticket = str(uuid.uuid4())
        self.server = TransferServer("127.0.0.1:0", self.pools).start()
        assert self.server.url is not None
        self.url = self.server.url

    def export(self) -> AgentTask:
        args = {
            "vm_id": self.vm,
            "format": "qcow2",
            "pool_name": "tsrc",
            "pool_path": SRC,
            "ticket": self.ticket,
            "token_sha256": hashlib.sha256(SECRET.encode()).hexdigest(),
        }
        return AgentTask(id=str(uuid.uuid4()), type="vm.export", args=args)

    def get(self, suffix: str = "", secret: str | None = SECRET, **headers: str) -> Any:
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        return httpx.get(f"{self.url}/v1/transfers/{self.ticket}{suffix}", headers=headers)

    def pull_args(self, url: str | None = None) -> vmmove.MoveArgs:
        return vmmove.MoveArgs.parse(
            {
                "vm_id": self.vm,
                "format": "qcow2",
                "source": {"pool_name": "tsrc", "pool_path": SRC},
                "target": {"pool_name": "tdst", "pool_path": DST},
                "transfer": {"url": url or self.url, "ticket": self.ticket, "secret": SECRET},
            }
        )


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.server.close()


def test_the_endpoint_serves_a_ticketed_disk_only_to_its_secret(env: Env) -> None:
    assert env.get("/sha256").status_code == 403  # no ticket yet
    env.server.sync([env.export()])
    r = env.get("/sha256")
    assert r.status_code == 200, r.text
    assert r.json() == {"sha256": env.sha, "size": len(env.data)}
    assert env.get().content == env.data
    part = env.get(Range=f"bytes={MiB}-")
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes {MiB}-{len(env.data) - 1}/{len(env.data)}"
    assert part.content == env.data[MiB:]
    assert env.get(Range="bytes=0-10").status_code == 416  # only open-ended resumes
    assert env.get(Range=f"bytes={len(env.data) + 1}-").status_code == 416
    assert env.get(Range="bytes=" + "9" * 5000 + "-").status_code == 416  # no int overflow
    for secret in ("wrong", "x" * 64, None):
        assert env.get(secret=secret).status_code == 403
    other = httpx.get(f"{env.url}/v1/transfers/{uuid.uuid4()}", headers={"Authorization":
                      f"Bearer {SECRET}"})  # fmt: skip
    assert other.status_code == 403  # the same answer: which tickets exist is not told
    assert httpx.get(f"{env.url}/etc/passwd").status_code == 404
    env.server.sync([])  # the control plane ended the export: revoked
    assert env.get().status_code == 403


def test_a_symlinked_disk_is_never_followed(env: Env, tmp_path: Path) -> None:
    secret_file = tmp_path / "not-a-disk"
    secret_file.write_bytes(b"host secrets")
    env.src.unlink()
    env.src.symlink_to(secret_file)
    env.server.sync([env.export()])
    r = env.get()
    assert r.status_code == 409
    assert b"host secrets" not in r.content


def test_a_pull_copies_verifies_and_finds_its_copy_again(env: Env) -> None:
    env.server.sync([env.export()])
    seen: list[str] = []
    result = vmmove.move(
        env.cache, env.pools, env.pull_args(), progress=lambda p, d, t: seen.append(p)
    )
    assert (result["method"], result["sha256"]) == ("transfer", env.sha)
    assert env.dst.read_bytes() == env.data
    assert {"source", "copy", "verify"} <= set(seen)
    again = vmmove.move(env.cache, env.pools, env.pull_args())
    assert again["method"] == "existing"
    assert list(env.dst.parents[2].joinpath("scratch").iterdir()) == []


class Flaky:
    """A source that answers the sha256 truthfully, then cuts the first body after
    ``cut`` bytes (or, with ``lie``, sends other bytes): a real HTTP server."""

    def __init__(self, data: bytes, sha: str, *, cut: int | None = None, lie: bool = False):
        self.data, self.sha, self.cut, self.lie = data, sha, cut, lie
        self.ranges: list[str | None] = []
        flaky = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.endswith("/sha256"):
                    body = f'{{"sha256": "{flaky.sha}", "size": {len(flaky.data)}}}'.encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                wanted = self.headers.get("Range")
                flaky.ranges.append(wanted)
                start = int(wanted[6:-1]) if wanted else 0
                payload = flaky.data[start:]
                if flaky.lie:
                    payload = bytes(len(payload))
                self.send_response(206 if wanted else 200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if flaky.cut is not None and len(flaky.ranges) == 1:
                    self.wfile.write(payload[: flaky.cut])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # the connection drops mid-body
                    return
                self.wfile.write(payload)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_dropped_connection_is_resumed_where_it_broke(env: Env) -> None:
    flaky = Flaky(env.data, env.sha, cut=2 * MiB + 123)
    args = env.pull_args(flaky.url)
    assert args.transfer is not None
    try:
        result = vmmove.pull(env.cache, env.pools, args, args.transfer, retry_delay=0)
    finally:
        flaky.close()
    assert result["sha256"] == env.sha
    assert env.dst.read_bytes() == env.data
    assert flaky.ranges[0] == "bytes=0-"
    resumed = int(str(flaky.ranges[1])[6:-1])
    assert 0 < resumed <= 2 * MiB + 123  # from what was received, not from the start


def test_bytes_that_do_not_hash_to_the_source_are_never_published(env: Env) -> None:
    flaky = Flaky(env.data, env.sha, lie=True)
    try:
        with pytest.raises(TaskFailure) as exc:
            vmmove.move(env.cache, env.pools, env.pull_args(flaky.url))
    finally:
        flaky.close()
    assert exc.value.code == "checksum_mismatch"
    assert not env.dst.exists()
    assert list(env.dst.parents[2].joinpath("scratch").iterdir()) == []


def test_a_wrong_secret_is_a_clear_refusal(env: Env) -> None:
    env.server.sync([env.export()])
    args = vmmove.MoveArgs.parse(
        {
            "vm_id": env.vm,
            "format": "qcow2",
            "source": {"pool_name": "tsrc", "pool_path": SRC},
            "target": {"pool_name": "tdst", "pool_path": DST},
            "transfer": {"url": env.url, "ticket": env.ticket, "secret": "guessed"},
        }
    )
    assert args.transfer is not None
    with pytest.raises(TaskFailure) as exc:  # after the retries a late ticket gets
        vmmove.pull(env.cache, env.pools, args, args.transfer, retry_delay=0.01)
    assert exc.value.code == "transfer_refused"
    assert not env.dst.exists()


def test_a_pull_waits_for_a_ticket_the_source_registers_late(env: Env) -> None:
    # The control plane wakes both nodes at once: the target may ask before the source's
    # agent has read the vm.export task that registers the ticket (both answer 403 alike).
    late = threading.Timer(0.3, lambda: env.server.sync([env.export()]))
    late.start()
    args = env.pull_args()
    assert args.transfer is not None
    try:
        result = vmmove.pull(env.cache, env.pools, args, args.transfer, retry_delay=0.1)
    finally:
        late.cancel()
    assert (result["method"], result["sha256"]) == ("transfer", env.sha)
    assert env.dst.read_bytes() == env.data

"""Multi-node test harness: real ``otherix-agent`` processes against a real control plane.

Usage (pytest)::

    cp = ControlPlane(tmp_path / "api", overrides=FAST).start()
    with Cluster(cp, tmp_path) as cluster:
        a = cluster.add_node("node-a")                 # own mount namespace if root
        b = cluster.add_node("node-b", net_ns=True)     # also its own network namespace
        cluster.wait_node_status("node-a", "ready")
        assert a.host_path("/var/lib/otherix/pools/default").is_dir()
        b.partition(); ...; b.heal()
        a.kill(signal.SIGKILL); a.restart()
    cp.stop()

``Cluster(api, tmp_path)`` accepts a harness ``ControlPlane``, the conftest
``api`` fixture object or a bare ``ApiServer``. Each node gets
``tmp_path/<name>/`` with ``agent/`` (data dir, node.json), ``agent.yaml`` and
``agent.log``. Isolation of pool paths:

- ``mount_ns=True`` and root: the agent runs under ``unshare --mount
  --propagation private`` with ``<node>/root`` bind-mounted on
  ``/var/lib/otherix``, so every node sees its own ``/var/lib/otherix/pools``
  exactly as on a real host (``node.mount_ns`` is True).
- otherwise (not root, or ``mount_ns=False``): the fallback. The agent's
  ``storage.host_root`` is ``<node>/fsroot``, so each node materialises
  declared paths under its own directory (``node.mount_ns`` is False,
  ``node.isolation`` says which). Tests keep working unchanged.

``node.host_path(p)`` maps a path as the node sees it to the host's view.
``net_ns=True`` (root only) runs the agent in ``ip netns`` ``otx-<id>`` joined
to the host by a veth pair on a free ``10.213.<x>.0/30``; the control plane
must listen on ``0.0.0.0`` (``ControlPlane(..., host="0.0.0.0")``).
``partition()``/``heal()`` take the host-side link down/up. ``close()`` (also
on exceptions, via ``with``) kills every process and deletes the namespaces.

VMs: agents run no VMs (``vms.enabled: false``) unless the node is added with
``runs_vms=True``, so the many tests whose images are not bootable start no
QEMU (their ``vm.create`` reports the start as ``failed``: "this node runs no
VMs: vms.enabled is false"). Such a node gets a short run directory of its own under ``/tmp``
(QMP socket paths must fit 107 bytes); ``close()`` kills the QEMUs recorded
there (they outlive their agent on purpose) and removes their cgroups.
Every wait is bounded.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from support.server import ADMIN, ApiServer, make_settings

T = TypeVar("T")
_log = logging.getLogger(__name__)
IS_ROOT = os.geteuid() == 0
MOUNT_NS_AVAILABLE = IS_ROOT and shutil.which("unshare") is not None
NET_NS_AVAILABLE = IS_ROOT and shutil.which("ip") is not None
NODE_ROOT = "/var/lib/otherix"
_AGENT_SCRIPT = Path(sys.executable).with_name("otherix-agent")
AGENT_CMD = (
    [str(_AGENT_SCRIPT)] if _AGENT_SCRIPT.exists() else [sys.executable, "-m", "otherix.agent"]
)

#: Control-plane settings for tests: liveness in seconds, not minutes.
FAST: dict[str, Any] = {
    "workers.heartbeat.stale_threshold": 2,
    "workers.heartbeat.gone_grace": 60,
    "workers.heartbeat.interval": 0.5,
    "workers.heartbeat.flush_interval": 0.2,
    "agents.heartbeat_interval": 1,
}
#: Agent settings for tests: short watches, quick retries, debug logs.
AGENT_DEFAULTS: dict[str, Any] = {
    "control_plane": {
        "watch_timeout": 5,
        "request_timeout": 3,
        "backoff_initial": 0.1,
        "backoff_max": 1.0,
    },
    "logging": {"level": "debug"},
    "vms": {"enabled": False},
}


def wait_until(fn: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``fn`` every 50 ms until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(0.05)


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=15)


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


class ControlPlane:
    """A control plane the harness can stop and start again on the same data dir and port."""

    def __init__(
        self, data_dir: Path, *, host: str = "127.0.0.1", overrides: Mapping[str, Any] | None = None
    ) -> None:
        settings: dict[str, Any] = {"storage_pools.allowed_path_prefixes": [f"{NODE_ROOT}/pools/"]}
        settings.update(overrides or {})
        self.settings = make_settings(data_dir, **settings)
        self.host = host
        self.port: int | None = None
        self.server: ApiServer | None = None
        self.admin_token = ""

    def start(self) -> ControlPlane:
        server = ApiServer(self.settings, host=self.host, port=self.port or 0)
        server.start()
        self.port = server.port
        self.server = server
        if not self.admin_token:
            try:
                self.admin_token = self._login(server)
            except BaseException:
                self.stop()
                raise
        return self

    def _login(self, server: ApiServer) -> str:

        server.services.user_service.ensure_bootstrap_admin(*ADMIN)
        return server.login(*ADMIN)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    @property
    def url(self) -> str:
        """Where the test process reaches it."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"


class NetNs:
    """A network namespace joined to the host by a veth pair on a /30."""

    def __init__(self, subnet: int) -> None:
        tag = secrets.token_hex(3)
        self.name, self.host_if, self.ns_if = f"otx-{tag}", f"otxh{tag}", f"otxn{tag}"
        self.host_ip, self.ns_ip = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
        self.created = False

    def create(self) -> NetNs:
        self.created = True
        _run("ip", "netns", "add", self.name)
        _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        _run("ip", "link", "set", self.ns_if, "netns", self.name)
        _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _run("ip", "-n", self.name, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        _run("ip", "link", "set", self.host_if, "up")
        _run("ip", "-n", self.name, "link", "set", self.ns_if, "up")
        _run("ip", "-n", self.name, "link", "set", "lo", "up")
        return self

    def set_link(self, up: bool) -> None:
        _run("ip", "link", "set", self.host_if, "up" if up else "down")

    def delete(self) -> None:
        if not self.created:
            return
        for args in (("ip", "netns", "del", self.name), ("ip", "link", "del", self.host_if)):
            subprocess.run(args, capture_output=True, timeout=15, check=False)
        self.created = False


def _free_subnet() -> int:
    used = set(
        re.findall(
            r"10\.213\.(\d+)\.",
            subprocess.run(
                ["ip", "-o", "-4", "addr", "show"],
                capture_output=True,
                text=True,
                timeout=15,
                check=True,
            ).stdout,
        )
    )
    start = secrets.randbelow(250)
    for i in range(250):
        candidate = (start + i) % 250
        if str(candidate) not in used:
            return candidate
    raise RuntimeError("no free 10.213.x.0/30 subnet")


class AgentProc:
    """One node: its directories, its ``otherix-agent serve`` process, its namespaces."""

    def __init__(self, name: str, node_dir: Path, *, mount_ns: bool, netns: NetNs | None) -> None:
        self.name = name
        self.dir = node_dir
        self.data_dir = node_dir / "agent"
        self.config_path = node_dir / "agent.yaml"
        self.log_path = node_dir / "agent.log"
        self.mount_ns = mount_ns
        self.isolation = "mount_ns" if mount_ns else "host_root"
        self.root = node_dir / ("root" if mount_ns else "fsroot")
        self.netns = netns
        self.proc: subprocess.Popen[bytes] | None = None
        #: the agent's VM run directory (``runs_vms=True`` only)
        self.vm_run_dir: Path | None = None

    def command(self, *args: str) -> list[str]:
        cmd = [
            *AGENT_CMD,
            *args,
            "--data-dir",
            str(self.data_dir),
            "--config",
            str(self.config_path),
        ]
        if args[0] == "serve" and self.mount_ns:
            script = f'mkdir -p {NODE_ROOT} && mount --bind "$0" {NODE_ROOT} && exec "$@"'
            cmd = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                str(self.root),
                *cmd,
            ]
        if self.netns is not None:
            cmd = ["ip", "netns", "exec", self.netns.name, *cmd]
        return cmd

    def start(self) -> AgentProc:
        assert not self.alive, f"{self.name} is already running"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command("serve"),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=_agent_env(),
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig``; for SIGKILL also wait until the process is gone."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(sig)
            if sig == signal.SIGKILL:
                self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL (whole process group) after ``timeout``; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def restart(self) -> AgentProc:
        self.stop()
        return self.start()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 10.0) -> None:
        wait_until(lambda: text in self.logs(), timeout, f"{text!r} in {self.name}'s log")

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.data_dir / "node.json").read_text()))

    def host_path(self, path: str) -> Path:
        """Where ``path``, as this node sees it, is on the host running the tests."""
        if not self.mount_ns:
            return Path(str(self.root) + path)
        if path == NODE_ROOT or path.startswith(NODE_ROOT + "/"):
            return self.root / os.path.relpath(path, NODE_ROOT)
        return Path(path)

    def qemu_pids(self) -> dict[str, int]:
        """VM id -> pid of each live QEMU recorded in this node's run directory."""
        found: dict[str, int] = {}
        if self.vm_run_dir is None or not self.vm_run_dir.is_dir():
            return found
        for pidfile in self.vm_run_dir.glob("*/qemu.pid"):
            try:
                pid = int(pidfile.read_text().strip())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                stat = Path(f"/proc/{pid}/stat").read_text()
            except (OSError, ValueError):
                continue
            if b"qemu-system" in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z":
                found[pidfile.parent.name] = pid
        return found

    def kill_vms(self) -> None:
        """SIGKILL every QEMU of this node and remove its cgroups (test cleanup)."""
        for vm_id, pid in self.qemu_pids().items():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists() or vm_id not in self.qemu_pids():
                    break
                time.sleep(0.05)
        if self.vm_run_dir is not None and self.vm_run_dir.is_dir():
            for vm_dir in self.vm_run_dir.iterdir():
                for group in Path("/sys/fs/cgroup").glob(f"*/otherix/{vm_dir.name}"):
                    with contextlib.suppress(OSError):
                        group.rmdir()
                with contextlib.suppress(OSError):
                    Path(f"/sys/fs/cgroup/otherix/{vm_dir.name}").rmdir()
            shutil.rmtree(self.vm_run_dir, ignore_errors=True)

    def partition(self) -> None:
        assert self.netns is not None, f"{self.name} has no network namespace"
        self.netns.set_link(False)

    def heal(self) -> None:
        assert self.netns is not None, f"{self.name} has no network namespace"
        self.netns.set_link(True)


def _agent_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTHERIX_")}


class Cluster:
    def __init__(
        self, api: Any, tmp_path: Path, *, agent_config: Mapping[str, Any] | None = None
    ) -> None:
        self._api = api
        self.tmp_path = tmp_path
        self.agent_config = _merge(AGENT_DEFAULTS, agent_config or {})
        self.nodes: dict[str, AgentProc] = {}
        self.mount_ns_available = MOUNT_NS_AVAILABLE
        _LIVE.add(self)
        self.admin = httpx.Client(
            base_url=self._url(),
            headers={"Authorization": f"Bearer {self._admin_token()}"},
            timeout=15,
        )

    # control plane ---------------------------------------------------------------
    def _server(self) -> ApiServer:
        api = self._api
        server = api.server if isinstance(api, ControlPlane) or hasattr(api, "tokens") else api
        assert server is not None, "the control plane is not running"
        return server

    def _url(self, host_if_netns: str | None = None) -> str:
        server = self._server()
        if host_if_netns is not None:
            assert server.host in ("0.0.0.0", ""), "net_ns nodes need a control plane on 0.0.0.0"
            return f"http://{host_if_netns}:{server.port}"
        host = "127.0.0.1" if server.host in ("0.0.0.0", "") else server.host
        return f"http://{host}:{server.port}"

    def _admin_token(self) -> str:
        if isinstance(self._api, ControlPlane):
            return self._api.admin_token
        if hasattr(self._api, "tokens"):
            return str(self._api.tokens["admin"])

        self._api.services.user_service.ensure_bootstrap_admin(*ADMIN)
        return self._api.login(*ADMIN)

    def join_token(self, max_uses: int = 1) -> str:
        r = self.admin.post(
            "/v1/nodes/join-tokens", json={"ttl_seconds": 3600, "max_uses": max_uses}
        )
        r.raise_for_status()
        return str(r.json()["token"])

    # nodes -----------------------------------------------------------------------
    def add_node(
        self,
        name: str,
        *,
        mount_ns: bool = True,
        net_ns: bool = False,
        config: Mapping[str, Any] | None = None,
        start: bool = True,
        servers: Sequence[str] | None = None,
        runs_vms: bool = False,
    ) -> AgentProc:
        """Enrol (and start) a node; ``servers``, control-plane URLs (one per
        replica), replaces the one URL of the cluster's control plane;
        ``runs_vms``: the agent runs VMs (real QEMU)."""
        if net_ns and not NET_NS_AVAILABLE:
            raise RuntimeError("net_ns needs root and iproute2")
        netns = NetNs(_free_subnet()) if net_ns else None
        node = AgentProc(
            name, self.tmp_path / name, mount_ns=mount_ns and MOUNT_NS_AVAILABLE, netns=netns
        )
        self.nodes[name] = node
        if mount_ns and not node.mount_ns:
            _log.info(
                "%s: no mount namespaces (not root); pool paths re-rooted under %s", name, node.root
            )
        node.root.mkdir(parents=True, exist_ok=True)
        if netns is not None:
            netns.create()
        url = self._url(netns.host_ip if netns else None)
        prefixes = self._server().settings.storage_pools.allowed_path_prefixes
        # the disk transfer endpoint of moves across nodes: any free port, so several
        # agents share the host; in a network namespace on every address of the node
        transfer = {"transfer": {"listen": "0.0.0.0:0" if netns else "127.0.0.1:0"}}
        cfg = _merge(
            _merge(transfer, self.agent_config),
            {
                "storage": {
                    "allowed_path_prefixes": prefixes,
                    **({} if node.mount_ns else {"host_root": str(node.root)}),
                }
            },
        )
        if runs_vms:
            node.vm_run_dir = Path(tempfile.mkdtemp(prefix="oxvm-", dir="/tmp"))
            cfg = _merge(cfg, {"vms": {"enabled": True, "run_dir": str(node.vm_run_dir)}})
        node.config_path.write_text(yaml.safe_dump(_merge(cfg, config or {})))
        urls = list(servers) if servers else [url]
        done = subprocess.run(
            node.command(
                "bootstrap",
                *(arg for u in urls for arg in ("--server", u)),
                "--join-token",
                self.join_token(),
                "--node-name",
                name,
            ),
            capture_output=True,
            text=True,
            timeout=30,
            env=_agent_env(),
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"bootstrap of {name} failed: {done.stderr or done.stdout}")
        return node.start() if start else node

    def node(self, name: str) -> dict[str, Any]:
        r = self.admin.get(f"/v1/nodes/{name}")
        r.raise_for_status()
        return dict(r.json())

    def wait_node_status(self, name: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
        return wait_until(
            lambda: (n := self.node(name))["status"] == status and n,
            timeout,
            f"node {name} {status}",
        )

    def pools(self, node: str) -> list[dict[str, Any]]:
        r = self.admin.get("/v1/storage-pools", params={"node": node, "limit": 200})
        r.raise_for_status()
        return list(r.json()["data"])

    def pool(self, node: str, name: str) -> dict[str, Any] | None:
        return next((p for p in self.pools(node) if p["name"].lower() == name.lower()), None)

    def wait_pool_status(
        self, node: str, name: str, status: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            p = self.pool(node, name)
            return p if p is not None and p["reconciliation_status"] == status else None

        return wait_until(check, timeout, f"pool {name} on {node} {status}")

    def close(self) -> None:
        """Kill every agent and delete every namespace; idempotent, never stops half-way."""
        problems: list[BaseException] = []
        for node in self.nodes.values():
            for step in (node.stop, node.kill_vms, node.netns.delete if node.netns else None):
                try:
                    if step is not None:
                        step()
                except Exception as exc:  # clean up the rest anyway
                    problems.append(exc)
        self.admin.close()
        _LIVE.discard(self)
        if problems:
            raise RuntimeError(f"cluster cleanup had {len(problems)} problem(s): {problems}")

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


#: Clusters not closed yet: closed at interpreter exit if a test run is cut short.
_LIVE: set[Cluster] = set()


@atexit.register
def _close_leftovers() -> None:
    for cluster in list(_LIVE):
        with contextlib.suppress(Exception):
            cluster.close()

"""``otherix-agent``: ``bootstrap`` (enrol this node) and ``serve`` (run the agent).

The composition root of the agent process: it loads ``AgentSettings``
(defaults < ``--config`` YAML < ``OTHERIX_`` env < flags), enrols the node
(``otherix.agent.enrol``: join or rejoin) or reads the enrolment state
(``otherix.agent.state``), builds the HTTP client (every control-plane URL,
with failover), the pool
reconciler, the image cache, the VM task workers and their report outbox,
and the loop (``otherix.agent.daemon``) and installs the signal handlers.
``build_pools`` also builds the process's one ``fs.ProtectedRoots`` (declared
pool roots, filled by the reconciler, checked by every removal) and one
``KeyedLocks`` (single flight for cache entries and VM disks) and passes them
to the reconciler and the image cache. Nothing here runs at import time.

Errors print ``error: <message>`` on stderr and exit 1.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, get_args

import click
import httpx

from otherix import __version__
from otherix.agent import enrol
from otherix.agent import state as node_state
from otherix.agent.daemon import EXIT_NODE_REMOVED, Daemon, LoopConfig, NodeRemoved
from otherix.agent.faultpoints import FaultPoints
from otherix.agent.fs import ProtectedRoots
from otherix.agent.images import ImageCache, KeyedLocks
from otherix.agent.logs import setup_logging
from otherix.agent.outbox import TaskOutbox
from otherix.agent.pools import PoolReconciler
from otherix.agent.report import PoolState
from otherix.agent.runtime import StopToken, SystemClock
from otherix.agent.scrubber import Scrubber
from otherix.agent.settings import AgentSettings
from otherix.agent.tasks import TaskRunner
from otherix.agent.transfer import TransferServer
from otherix.agent.vmpower import VmHost
from otherix.agent.vms import accel, cgroups
from otherix.agent.vms.command import QEMU_BINARY
from otherix.agent.vms.runtime import VmRuntime
from otherix.agent.vms.supervisor import VmSupervisor
from otherix.agent.vmtasks import VmTasks
from otherix.client.agent import AgentClient
from otherix.client.base import url_list
from otherix.config import ConfigError, load_config
from otherix.models.nodes import Architecture

__all__ = ["build_pools", "cli", "main"]

_log = logging.getLogger("otherix.agent")

_MACHINES: dict[str, Architecture] = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
}


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _settings(config_file: Path | None, data_dir: Path | None) -> AgentSettings:
    try:
        return load_config(
            AgentSettings,
            config_file=config_file,
            env=os.environ,
            overrides={"data_dir": data_dir},
        )
    except ConfigError as exc:
        _fail(str(exc))


def _client(settings: AgentSettings, urls: Sequence[str], token: str | None) -> AgentClient:
    cp = settings.control_plane
    transport = None
    if cp.ca_file is not None:  # verify the control plane against this CA only
        try:
            context = ssl.create_default_context(cafile=str(cp.ca_file))
        except (OSError, ssl.SSLError) as exc:
            _fail(f"control_plane.ca_file {cp.ca_file}: {exc}")
        transport = httpx.HTTPTransport(verify=context)
    client = AgentClient(
        urls, token, timeout=cp.request_timeout, transport=transport, trust_env=False
    )
    client.watch_grace = cp.request_timeout
    return client


def start_transfer(
    settings: AgentSettings, pools: PoolState, urls: Sequence[str]
) -> TransferServer | None:
    """The disk transfer endpoint (``transfer.listen``), or None when it is off or its
    address cannot be bound (logged: this node then takes no part in moves across
    nodes, and the control plane refuses them)."""
    listen = settings.transfer.listen
    if not listen:
        return None
    try:
        return TransferServer(
            listen,
            pools,
            control_plane_url=urls[0] if urls else None,
            max_bytes_per_second=settings.tasks.move_max_bytes_per_second,
        ).start()
    except OSError as exc:
        _log.error("disk transfer endpoint not started: %s (transfer.listen %s)", exc, listen)
        return None


def host_architecture() -> Architecture | None:
    return _MACHINES.get(platform.machine().lower())


def host_capabilities(qemu: str = QEMU_BINARY) -> dict[str, Any]:
    """Static facts about this host, sent with every full report."""
    caps: dict[str, Any] = {"kernel_version": platform.release()}
    cores = os.cpu_count()
    if cores:
        caps["cpu_cores_total"] = cores
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    caps["memory_total_mib"] = int(line.split()[1]) // 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    caps.update(vm_capabilities(qemu))
    return caps


#: what a VM's directory in the run directory adds to its path: "/<uuid>/qmp.sock"
_SOCKET_SUFFIX = 1 + 36 + len("/qmp.sock")


def build_vm_host(settings: AgentSettings, caps: dict[str, Any]) -> VmHost | None:
    """The VM runtime and its supervisor, re-attached to the VMs that run already; None
    when VMs are disabled or QEMU is not installed (``caps``: ``vm_capabilities``)."""
    vms = settings.vms
    if not vms.enabled:
        caps.update(vm_accelerator="none", vm_accelerator_reason="vms.enabled is false")
        return None
    chosen = caps.get("vm_accelerator")
    if chosen not in ("kvm", "tcg"):
        _log.warning("this node runs no VMs: %s", caps.get("vm_accelerator_reason"))
        return None
    run_dir = vms.run_dir or settings.data_dir / "vms"
    if len(str(run_dir)) + _SOCKET_SUFFIX > 107:
        why = (
            f"vms.run_dir {run_dir} is too long for QEMU's QMP socket paths "
            f"(at most {107 - _SOCKET_SUFFIX} characters): set vms.run_dir to a shorter path"
        )
        if vms.run_dir is not None:  # set on purpose: say so and stop
            _fail(why)
        # the default under a long --data-dir: the node still serves its pools
        _log.warning("this node runs no VMs: %s", why)
        caps.update(vm_accelerator="none", vm_accelerator_reason=why)
        return None
    runtime = VmRuntime(run_dir, start_timeout=vms.start_timeout, console_cap=vms.console_cap)
    supervisor = VmSupervisor(
        runtime,
        interval=vms.supervise_interval,
        backoff_initial=vms.restart_backoff_initial,
        backoff_max=vms.restart_backoff_max,
    )
    found = supervisor.attach()
    if found:
        _log.info("re-attached to %d VM(s) recorded in %s", len(found), run_dir)
    return VmHost(supervisor.start(), "kvm" if chosen == "kvm" else "tcg", vms.qemu_binary)


def vm_capabilities(
    qemu: str = QEMU_BINARY, limits: cgroups.CgroupSupport | None = None
) -> dict[str, str]:
    """What this node can run VMs with (``otherix node get`` shows it): the accelerator
    (``kvm`` only when it really runs guests, ``agent/vms/accel.py``; else ``tcg`` and
    why), or ``none`` when QEMU is not installed; and the per-VM resource limits
    (``agent/vms/cgroups.py``: ``v2``, ``v1``, or ``none`` and why; ``limits`` is
    detected unless given)."""
    found = cgroups.detect() if limits is None else limits
    caps: dict[str, str] = {"vm_resource_limits": found.mode}
    if found.reason:
        caps["vm_resource_limits_reason"] = found.reason
    if shutil.which(qemu) is None:
        caps.update(vm_accelerator="none", vm_accelerator_reason=f"{qemu} is not installed")
        return caps
    probed = accel.probe(qemu=qemu)
    caps["vm_accelerator"] = probed.accel
    if probed.reason:
        caps["vm_accelerator_reason"] = probed.reason
    return caps


_CONFIG_OPTION = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="YAML config file. Keys: data_dir, control_plane.{url, urls, heartbeat_interval, "
    "watch_timeout, request_timeout, backoff_initial, backoff_max, ca_file}, "
    "storage.{allowed_path_prefixes, host_root}, images.{max_image_bytes, connect_timeout, "
    "read_timeout, total_timeout, min_rate_bytes_per_second, min_rate_window, max_redirects, "
    "space_margin_bytes, "
    "allow_loopback_and_link_local, allowed_networks, ca_file}, tasks.{vm_create_workers, "
    "vm_create_per_source, "
    "vm_create_attempts, retry_delay, progress_interval}, vms.{enabled, qemu_binary, run_dir, "
    "start_timeout, console_cap, power_workers, supervise_interval, restart_backoff_initial, "
    "restart_backoff_max}, logging.level. OTHERIX_* variables "
    "override it (OTHERIX_CONTROL_PLANE__URL=...), flags override both.",
)
_DATA_DIR_OPTION = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the enrolment state (node.json) lives. [default: /var/lib/otherix/agent]",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="otherix-agent")
def cli() -> None:
    """Otherix node agent: materialises this node's storage pools, image caches and VM disks.

    Enrol the node once with 'bootstrap', then run 'serve' (under systemd or
    similar). The agent only ever connects out to the control plane.
    """


@cli.command()
@click.option(
    "--server",
    "servers",
    required=True,
    multiple=True,
    metavar="URL",
    help="Control-plane URL. Repeat it for each replica: the agent tries them in order "
    "and stays on the one that answers.",
)
@click.option(
    "--join-token",
    envvar="OTHERIX_JOIN_TOKEN",
    metavar="TOKEN",
    help="Join token from 'otherix node join-token create', to enrol a new node "
    "(or OTHERIX_JOIN_TOKEN, which keeps it out of the process list).",
)
@click.option(
    "--rejoin-token",
    envvar="OTHERIX_REJOIN_TOKEN",
    metavar="TOKEN",
    help="Re-enrol token from 'otherix node reset-credentials NODE': the same node "
    "(same id, same pools) gets new credentials and the old ones stop working "
    "(or OTHERIX_REJOIN_TOKEN).",
)
@click.option(
    "--node-name",
    metavar="NAME",
    help="This node's name. Needed with --join-token; with --rejoin-token it is "
    "checked against the token's node.",
)
@_DATA_DIR_OPTION
@click.option(
    "--architecture",
    type=click.Choice(get_args(Architecture)),
    help="CPU architecture to register. [default: from platform.machine()]",
)
@click.option("--force", is_flag=True, help="Enrol again even if this node is enrolled.")
@_CONFIG_OPTION
def bootstrap(
    servers: tuple[str, ...],
    join_token: str | None,
    rejoin_token: str | None,
    node_name: str | None,
    data_dir: Path | None,
    architecture: Architecture | None,
    force: bool,
    config_file: Path | None,
) -> None:
    """Enrol this node with the control plane (a join token), or give an enrolled
    node that lost its state new credentials (a re-enrol token).

    Stores the control-plane URLs, the node's id and its credential in
    DATA_DIR/node.json (mode 0600). Refuses to overwrite an existing
    enrolment unless --force is given; the old credential is then discarded.
    With --rejoin-token a missing or damaged node.json is replaced without
    --force, and nothing changes on the control plane unless the token is
    good: wrong, expired, used or another node's tokens leave the old
    credential working.

    \b
    Examples:
      otherix-agent bootstrap --server https://cp-a:8080 --server https://cp-b:8080 \\
          --join-token otxj_... --node-name node-b
      otherix-agent bootstrap --server https://cp-a:8080 --rejoin-token otxr_...
    """
    settings = _settings(config_file, data_dir)
    for server in servers:
        if not server.startswith(("http://", "https://")):
            _fail(f"--server must be an http:// or https:// URL, got {server!r}")
    if (join_token is None) == (rejoin_token is None):
        raise click.UsageError("give exactly one of --join-token and --rejoin-token")
    if join_token is not None and not node_name:
        raise click.UsageError("--node-name is needed with --join-token")
    arch = architecture or host_architecture()
    if arch is None:
        _fail(f"unknown machine type {platform.machine()!r}; pass --architecture")
    urls = url_list(servers)
    client = _client(settings, urls, None)
    try:
        enrol.check_existing(settings.data_dir, force=force, rejoin=rejoin_token is not None)
        done = enrol.enrol(
            client,
            settings.data_dir,
            urls,
            join_token=join_token,
            rejoin_token=rejoin_token,
            node_name=node_name,
            architecture=arch,
        )
    except enrol.EnrolError as exc:
        _fail(str(exc))
    finally:
        client.close()
    click.echo(done)


def build_pools(settings: AgentSettings) -> tuple[PoolState, ImageCache]:
    """The pool state (over the pool reconciler) and the image cache of one agent process.

    Builds the process's two shared registries, here and nowhere else: one
    ``ProtectedRoots``, which the reconciler fills with every declared pool's
    real root and every removal (scratch sweep, VM disk) checks, and one
    ``KeyedLocks``, single flight for cache entries and VM disk directories.
    """
    protected = ProtectedRoots()
    cache = ImageCache(
        settings.images.cache_settings(f"otherix-agent/{__version__}"),
        locks=KeyedLocks(),
        protected=protected,
        faults=FaultPoints(settings.debug.pause_at),
    )
    pool_state = PoolState(
        PoolReconciler(settings.data_dir / "pools.json", protected=protected),
        allowed_prefixes=settings.storage.allowed_path_prefixes,
        host_root=settings.storage.host_root,
        images=cache,
        usage_interval=settings.storage.usage_interval,
    )
    pool_state.set_scratch(cache.scratch.busy, protected)  # drift (issue 16)
    return pool_state, cache


@cli.command()
@_DATA_DIR_OPTION
@_CONFIG_OPTION
def serve(data_dir: Path | None, config_file: Path | None) -> None:
    """Run the agent until SIGTERM or SIGINT (then exit 0).

    Exits 78 when the control plane says this node was removed from the
    cluster ('otherix node delete'); do not restart it on that status
    (systemd: RestartPreventExitStatus=78), re-join it instead.

    Heartbeats to the control plane, applies the declared pools (directories
    under the allowed path prefixes), holds a long-poll watch open so changes
    apply within milliseconds, and retries with backoff while the control
    plane is unreachable. VM disk tasks (image download into the pool's cache,
    disk clone) run in worker threads; VMs run as QEMU processes that outlive
    the agent, and a restarted agent re-attaches to them. Needs a prior
    'bootstrap'.
    """
    settings = _settings(config_file, data_dir)
    setup_logging(settings.logging.level)
    where = None if data_dir is None else settings.data_dir
    try:
        enrolled = node_state.load(settings.data_dir)
    except node_state.StateError as exc:
        _fail(f"{exc}. This node's enrolment state is damaged: {node_state.recovery_hint(where)}")
    if enrolled is None:
        _fail(
            f"this node is not enrolled ({node_state.state_path(settings.data_dir)} "
            "does not exist). A new node: run 'otherix-agent bootstrap --server URL "
            "--join-token TOKEN --node-name NAME'. A node that was enrolled and lost this "
            f"file: {node_state.recovery_hint(where)}"
        )
    cp = settings.control_plane
    urls = url_list(cp.configured_urls() or enrolled.urls)
    stop = StopToken()
    stop.install()
    pool_state, cache = build_pools(settings)
    client = _client(settings, urls, enrolled.credential)
    # Task reports get their own connection pool: a held watch never delays them.
    report_client = _client(settings, urls, enrolled.credential)
    outbox = TaskOutbox(
        report_client,
        enrolled.node_name,
        interval=settings.tasks.progress_interval,
        backoff_initial=cp.backoff_initial,
        backoff_max=cp.backoff_max,
    ).start()
    caps = host_capabilities(settings.vms.qemu_binary)
    host = build_vm_host(settings, caps)
    if host is not None:  # a running VM's image is never evicted from its pool's cache
        runtime = host.supervisor.runtime
        pool_state.set_running(lambda: {v for v in runtime.vm_ids() if runtime.alive(v)})
    vms = VmTasks(
        cache=cache,
        pools=pool_state,
        outbox=outbox,
        create_workers=settings.tasks.vm_create_workers,
        per_source=settings.tasks.vm_create_per_source,
        attempts=settings.tasks.vm_create_attempts,
        retry_delay=settings.tasks.retry_delay,
        host=host,
        power_workers=settings.vms.power_workers,
        ownership=pool_state,
        move_max_bytes_per_second=settings.tasks.move_max_bytes_per_second,
        no_vms=f"this node runs no VMs: {caps.get('vm_accelerator_reason') or 'no VM runtime'}",
    )
    scrubber = Scrubber(locks=cache.locks, pools=pool_state, outbox=outbox, faults=cache.faults)
    pool_state.set_scrubber(scrubber)
    scrubber.start()
    transfer = start_transfer(settings, pool_state, urls)
    if transfer is not None and transfer.url:
        caps["transfer_url"] = transfer.url
    try:
        daemon = Daemon(
            client=client,
            pools=pool_state,
            tasks=TaskRunner(
                pool_state, vms=vms, scrubber=scrubber, transfer=transfer, drift=pool_state
            ),
            state=enrolled,
            clock=SystemClock(stop),
            stop=stop,
            config=LoopConfig(
                heartbeat_interval=cp.heartbeat_interval,
                watch_timeout=cp.watch_timeout,
                backoff_initial=cp.backoff_initial,
                backoff_max=cp.backoff_max,
            ),
            agent_version=__version__,
            persist=lambda s: node_state.save(settings.data_dir, s),
            capabilities=caps,
            vms=host.supervisor if host is not None else None,
        )
        _log.info(
            "otherix-agent %s serving node %s (%s) against %s",
            __version__,
            enrolled.node_name,
            enrolled.node_id,
            ", ".join(urls),
        )
        daemon.run()
    except NodeRemoved:
        removed = True
    else:
        removed = False
    finally:
        if host is not None:
            host.supervisor.close()  # the VMs keep running; a restarted agent re-attaches
        scrubber.close()
        if transfer is not None:
            transfer.close()
        vms.close()
        outbox.close()
        client.close()
        report_client.close()
    if removed:  # logged by the daemon; a distinct status so it is not restarted
        sys.exit(EXIT_NODE_REMOVED)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()

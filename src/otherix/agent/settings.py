"""``AgentSettings``: every configuration key of ``otherix-agent`` with its default.

Loaded by the composition root (``otherix.agent.main``) through
:func:`otherix.config.load_config`: defaults < ``--config`` YAML <
``OTHERIX_`` environment (``OTHERIX_CONTROL_PLANE__WATCH_TIMEOUT=10s``) <
command-line flags. Invalid values stop the process at start with the key's
dotted name.

Keys (docs/configuration.md where it lists them; the rest are ours):

- ``data_dir`` (``/var/lib/otherix/agent``): enrolment state (``node.json``).
- ``control_plane.url``: unset means the URLs ``bootstrap`` stored in
  ``node.json``; set, it wins (the control plane moved).
- ``control_plane.urls``: the list form of ``url``, one URL per control-plane
  replica (``[https://cp-a:8080, https://cp-b:8080]``); the agent fails over
  between them in order (``otherix.client.base``). Set ``url`` or ``urls``,
  not both.
- ``control_plane.heartbeat_interval``: unset means "what the control plane
  says" (``heartbeat_interval_seconds`` of each heartbeat reply; 30 s until the
  first reply). Set, it overrides the control plane for this node.
- ``control_plane.watch_timeout`` (25 s, at most 120 s, the server's limit):
  how long one long-poll watch is held open.
- ``control_plane.request_timeout`` (10 s): per request; a watch gets its
  timeout plus this much.
- ``control_plane.backoff_initial`` / ``backoff_max`` (0.5 s / 30 s):
  exponential backoff with full jitter after a retryable failure
  (``otherix.retry``: a transport error, 408, 429, a 5xx other than 500).
- ``control_plane.ca_file``: CA bundle to verify the control plane's TLS
  certificate (default: the system store).
- ``storage.allowed_path_prefixes`` (``["/var/lib/otherix/pools/"]``): defense
  in depth; a declared pool outside them is reported ``failed`` and nothing is
  created. Same syntax as the control plane's allowlist.
- ``storage.host_root`` (``/``): declared pool paths are materialised under
  this directory. ``/`` on a normal host; ``/host`` for an agent in a container
  that sees the host's filesystem there; a temp dir for tests that run several
  agents on one machine without mount namespaces.
- ``images.*``: the per-pool image cache (``otherix.agent.images``), see below.
- ``tasks.*``: how ``vm.create`` / ``vm.delete`` run (``otherix.agent.vmtasks``).
- ``logging.level`` (``info``).

``images`` (limits follow docs/pool-contract.md §10.2 where it has them):

==================================  ===========  ============================================
key                                 default      meaning
==================================  ===========  ============================================
``max_image_bytes``                 ``64GiB``    largest image accepted (bytes, or ``650MiB``
                                                 style); over it the create fails
                                                 ``image_unavailable``
``connect_timeout``                 ``30s``      per connection attempt to the image source
``read_timeout``                    ``60s``      without a single byte: ``download_failed``
``total_timeout``                   ``1h``       for one whole download
``min_rate_bytes_per_second``       ``64KiB``    a download slower than this, averaged over
                                                 ``min_rate_window``, fails
                                                 ``download_too_slow`` (not retried); ``0``
                                                 turns the floor off
``min_rate_window``                 ``30s``      the averaging window; the first check comes
                                                 one window after the connection is up
``max_redirects``                   ``5``        redirects followed (each hop SSRF-checked)
``space_margin_bytes``              ``256MiB``   free space that must remain in the pool
                                                 after a download of known size
``allow_loopback_and_link_local``   ``false``    let downloads reach 127.0.0.0/8, ::1,
                                                 169.254.0.0/16, fe80::/10. Development and
                                                 tests only: on a real node it exposes local
                                                 services. Cloud metadata addresses stay
                                                 refused even then.
``allowed_networks``                ``[]``       networks always allowed (``10.1.2.3/32``,
                                                 ``127.0.0.0/8``); wins over every refusal
``ca_file``                         unset        CA bundle for https image sources
                                                 (default: the system store)
==================================  ===========  ============================================

``tasks``:

- ``vm_create_workers`` (4): ``vm.create`` tasks run at once on this node;
  more wait in line (``vm.delete`` has its own worker, so a delete never waits
  behind another VM's download).
- ``vm_create_per_source`` (2): of those, at most this many for one image
  source (scheme, host and port of the image URL); the next task of a busy
  source waits in line without holding a worker, so other sources go first.
- ``vm_create_attempts`` (3): tries of one ``vm.create`` when the failure may
  pass (``download_failed``, ``clone_failed``, a retryable
  ``image_unavailable``), ``retry_delay`` (5 s) apart, doubling.
- ``progress_interval`` (0.5 s, at least 0.1 s): least time between two
  progress reports of one task.
- ``move_max_bytes_per_second`` (unset: unlimited; at least 64 KiB/s): the rate
  at which a ``vm.move`` reads disks (the copy and both sha256 passes), so the
  VMs on the two pools keep their disk bandwidth.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from otherix.agent.images import ImageCacheSettings
from otherix.config import AllowedPrefixes, Duration, Section, default_prefixes

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "AgentSettings",
    "ByteSize",
    "ControlPlaneSection",
    "ImagesSection",
    "LoggingSection",
    "StorageSection",
    "TasksSection",
    "parse_bytes",
]

DEFAULT_DATA_DIR = Path("/var/lib/otherix/agent")
#: Used until the control plane has said otherwise (and heartbeat_interval is unset).
DEFAULT_HEARTBEAT_INTERVAL = 30.0
_MAX_WATCH_TIMEOUT = 120.0  # the control plane's upper bound for ?timeout=
_BYTES: Final = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|TiB)?\s*$")
_BYTE_UNITS: Final = {
    None: 1,
    "B": 1,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "TiB": 1 << 40,
}


def parse_bytes(value: object) -> int:
    """``"650MiB"`` -> 681574400; integers are bytes. Binary units only (KiB..TiB)."""
    if isinstance(value, bool):
        raise ValueError("size must be a number of bytes or like 650MiB, 64GiB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("size must not be negative")
        return value
    if isinstance(value, str) and (m := _BYTES.match(value)):
        return int(m.group(1)) * _BYTE_UNITS[m.group(2)]
    raise ValueError(f"invalid size {value!r} (use bytes, or e.g. 650MiB, 64GiB)")


ByteSize = Annotated[int, BeforeValidator(parse_bytes)]


class ControlPlaneSection(Section):
    url: str | None = None
    urls: list[str] | None = None
    heartbeat_interval: Duration | None = None
    watch_timeout: Duration = 25.0
    request_timeout: Duration = 10.0
    backoff_initial: Duration = 0.5
    backoff_max: Duration = 30.0
    ca_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v

    @field_validator("urls")
    @classmethod
    def _urls(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must list at least one URL (or leave it unset)")
        for url in v:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} must start with http:// or https://")
        return v

    def configured_urls(self) -> list[str] | None:
        """``urls``, or ``[url]``, or None when neither is set (use node.json)."""
        if self.urls is not None:
            return list(self.urls)
        return [self.url] if self.url is not None else None

    @model_validator(mode="after")
    def _ranges(self) -> ControlPlaneSection:
        if self.url is not None and self.urls is not None:
            raise ValueError("set url or urls, not both")
        if self.heartbeat_interval is not None and self.heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive")
        if not 0 < self.watch_timeout <= _MAX_WATCH_TIMEOUT:
            raise ValueError(f"watch_timeout must be in (0, {_MAX_WATCH_TIMEOUT:g}s]")
        if self.request_timeout <= 0:
            raise ValueError("request_timeout must be positive")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValueError("backoff_initial must be positive and at most backoff_max")
        return self


class StorageSection(Section):
    allowed_path_prefixes: AllowedPrefixes = Field(default_factory=default_prefixes)
    host_root: Path = Path("/")
    #: seconds between two walks of a pool's vms/, images/ and scratch/ (issue 16)
    usage_interval: Duration = 60.0

    @field_validator("usage_interval")
    @classmethod
    def _interval(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be positive")
        return v

    @field_validator("host_root")
    @classmethod
    def _root(cls, v: Path) -> Path:
        if not v.is_absolute():
            raise ValueError("must be an absolute path")
        return v


class ImagesSection(Section):
    max_image_bytes: ByteSize = 64 << 30
    connect_timeout: Duration = 30.0
    read_timeout: Duration = 60.0
    total_timeout: Duration = 3600.0
    min_rate_bytes_per_second: ByteSize = 64 << 10
    min_rate_window: Duration = 30.0
    max_redirects: int = Field(default=5, ge=0, le=20)
    space_margin_bytes: ByteSize = 256 << 20
    allow_loopback_and_link_local: bool = False
    allowed_networks: list[str] = Field(default_factory=list)
    ca_file: Path | None = None

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for network in v:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not a network (like 10.0.0.0/8)") from None
        return v

    @model_validator(mode="after")
    def _positive(self) -> ImagesSection:
        if self.max_image_bytes <= 0:
            raise ValueError("max_image_bytes must be positive")
        for key in ("connect_timeout", "read_timeout", "total_timeout", "min_rate_window"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive")
        return self

    def cache_settings(self, user_agent: str = "otherix-agent") -> ImageCacheSettings:
        """The ``ImageCacheSettings`` this section stands for."""
        return ImageCacheSettings(
            max_image_bytes=self.max_image_bytes,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            total_timeout=self.total_timeout,
            min_rate_bytes_per_second=self.min_rate_bytes_per_second,
            min_rate_window=self.min_rate_window,
            max_redirects=self.max_redirects,
            space_margin_bytes=self.space_margin_bytes,
            allow_loopback_and_link_local=self.allow_loopback_and_link_local,
            allowed_networks=tuple(self.allowed_networks),
            ca_file=self.ca_file,
            user_agent=user_agent,
        )


class TasksSection(Section):
    vm_create_workers: int = Field(default=4, ge=1, le=32)
    vm_create_per_source: int = Field(default=2, ge=1, le=32)
    vm_create_attempts: int = Field(default=3, ge=1, le=10)
    retry_delay: Duration = 5.0
    progress_interval: Duration = 0.5
    #: bytes per second a ``vm.move`` reads (copy and verify; None: unlimited)
    move_max_bytes_per_second: int | None = Field(default=None, ge=1 << 16, le=1 << 40)

    @field_validator("progress_interval")
    @classmethod
    def _interval(cls, v: float) -> float:
        if v < 0.1:
            raise ValueError("must be at least 0.1s")
        return v


class TransferSection(Section):
    """The disk transfer endpoint other agents pull from in a move across nodes
    (``otherix.agent.transfer``): ``listen`` is ``host:port`` (port 0: any free port;
    empty: off, and this node takes no part in moves across nodes)."""

    listen: str = "0.0.0.0:7444"

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        if v == "":
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
            raise ValueError("must be host:port (port 0-65535), or empty to turn it off")
        return v


class VmsSection(Section):
    """The VM runtime (docs/vm-runtime.md)."""

    #: False: this node runs no VMs (power tasks fail with ``vm_unavailable``)
    enabled: bool = True
    qemu_binary: str = "qemu-system-x86_64"
    #: QMP sockets, pidfiles and state files, one directory per VM (default:
    #: ``<data_dir>/vms``); kept across reboots, so a VM that ran before one is restarted
    #: by its restart policy. Its path plus 46 characters must fit a socket path (107).
    run_dir: Path | None = None
    start_timeout: Duration = 30.0
    console_cap: ByteSize = 1 << 20
    power_workers: int = Field(default=2, ge=1, le=32)
    supervise_interval: Duration = 1.0
    restart_backoff_initial: Duration = 1.0
    restart_backoff_max: Duration = 60.0


class LoggingSection(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


class AgentSettings(Section):
    data_dir: Path = DEFAULT_DATA_DIR
    control_plane: ControlPlaneSection = ControlPlaneSection()
    storage: StorageSection = StorageSection()
    images: ImagesSection = ImagesSection()
    tasks: TasksSection = TasksSection()
    transfer: TransferSection = TransferSection()
    vms: VmsSection = VmsSection()
    logging: LoggingSection = LoggingSection()

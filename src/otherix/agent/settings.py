"""``AgentSettings``: every configuration key of ``otherix-agent`` with its default.

Loaded by the composition root (``otherix.agent.main``) through
:func:`otherix.config.load_config`: defaults < ``--config`` YAML <
``OTHERIX_`` environment (``OTHERIX_CONTROL_PLANE__WATCH_TIMEOUT=10s``) <
command-line flags. Invalid values stop the process at start with the key's
dotted name.

Keys (contract §7.2 where it has them; the rest are ours):

- ``data_dir`` (``/var/lib/otherix/agent``): enrolment state (``node.json``).
- ``control_plane.url``: unset means the URL ``bootstrap`` stored in
  ``node.json``; set, it wins (the control plane moved).
- ``control_plane.heartbeat_interval``: unset means "what the control plane
  says" (``heartbeat_interval_seconds`` of each heartbeat reply; 30 s until the
  first reply). Set, it overrides the control plane for this node.
- ``control_plane.watch_timeout`` (25 s, at most 120 s, the server's limit):
  how long one long-poll watch is held open.
- ``control_plane.request_timeout`` (10 s): per request; a watch gets its
  timeout plus this much.
- ``control_plane.backoff_initial`` / ``backoff_max`` (0.5 s / 30 s):
  exponential backoff with full jitter after a transport error or a 5xx.
- ``control_plane.ca_file``: CA bundle to verify the control plane's TLS
  certificate (default: the system store).
- ``storage.allowed_path_prefixes`` (``["/var/lib/otherix/pools/"]``): defense
  in depth; a declared pool outside them is reported ``failed`` and nothing is
  created. Same syntax as the control plane's allowlist.
- ``storage.host_root`` (``/``): declared pool paths are materialised under
  this directory. ``/`` on a normal host; ``/host`` for an agent in a container
  that sees the host's filesystem there; a temp dir for tests that run several
  agents on one machine without mount namespaces.
- ``logging.level`` (``info``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from otherix.config import AllowedPrefixes, Duration, Section, default_prefixes

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "AgentSettings",
    "ControlPlaneSection",
    "LoggingSection",
    "StorageSection",
]

DEFAULT_DATA_DIR = Path("/var/lib/otherix/agent")
#: Used until the control plane has said otherwise (and heartbeat_interval is unset).
DEFAULT_HEARTBEAT_INTERVAL = 30.0
_MAX_WATCH_TIMEOUT = 120.0  # the control plane's upper bound for ?timeout=


class ControlPlaneSection(Section):
    url: str | None = None
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

    @model_validator(mode="after")
    def _ranges(self) -> ControlPlaneSection:
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

    @field_validator("host_root")
    @classmethod
    def _root(cls, v: Path) -> Path:
        if not v.is_absolute():
            raise ValueError("must be an absolute path")
        return v


class LoggingSection(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


class AgentSettings(Section):
    data_dir: Path = DEFAULT_DATA_DIR
    control_plane: ControlPlaneSection = ControlPlaneSection()
    storage: StorageSection = StorageSection()
    logging: LoggingSection = LoggingSection()

"""The agent's enrolment state: ``{data_dir}/node.json``.

Written by ``otherix-agent bootstrap`` (enrolment) and by the daemon each time
it applies a new desired revision; read by ``otherix-agent serve`` at start.
It holds the node credential, so the file is 0600 and its directory 0700, and
every write replaces it atomically through ``otherix.agent.fs`` (a crash
leaves the old file or the new one, never half of one).

Fields: ``servers`` (the control-plane URLs given at enrolment, one per
replica, in the order the agent tries them), ``server`` (the first of them;
the only URL field of files written before ``servers`` existed, which load as
a list of one, and what an older agent would read), ``node_name``,
``node_id``, ``credential``, ``architecture`` (what the node enrolled as;
every heartbeat repeats it) and ``revision`` (the last desired revision
applied; informational across restarts, since the pool registry starts empty
anyway and reconcile is idempotent).

A missing or damaged file is not the end of a node: an admin makes a re-enrol
token with ``otherix node reset-credentials NODE`` and ``otherix-agent
bootstrap --rejoin-token`` writes a new file for the same node (same id, same
pools). :func:`recovery_hint` says so, for the errors that need it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final, get_args

from otherix.agent import fs
from otherix.models.nodes import Architecture

__all__ = [
    "STATE_FILE",
    "NodeState",
    "StateError",
    "load",
    "recovery_hint",
    "save",
    "state_path",
]

STATE_FILE: Final = "node.json"
_DIR_MODE: Final = 0o700
_FILE_MODE: Final = 0o600


class StateError(Exception):
    """The state file exists but cannot be read or is not a valid state."""


@dataclass(frozen=True)
class NodeState:
    server: str
    node_name: str
    node_id: str
    credential: str
    architecture: Architecture
    revision: int = 0
    #: Every control-plane URL, ``server`` first; empty means ``server`` alone.
    servers: tuple[str, ...] = ()

    @property
    def urls(self) -> tuple[str, ...]:
        """The control-plane URLs to try, in order."""
        return self.servers or (self.server,)

    def with_revision(self, revision: int) -> NodeState:
        return replace(self, revision=revision)

    def __repr__(self) -> str:  # never print the credential
        return (
            f"NodeState(servers={list(self.urls)!r}, node_name={self.node_name!r}, "
            f"node_id={self.node_id!r}, architecture={self.architecture!r}, "
            f"revision={self.revision})"
        )


def recovery_hint(data_dir: Path | None = None) -> str:
    """How a node that lost its enrolment state comes back as the same node."""
    where = f" --data-dir {data_dir}" if data_dir is not None else ""
    return (
        "to give this node new credentials (same node id, same pools), an admin runs "
        "'otherix node reset-credentials NODE', then run 'otherix-agent bootstrap "
        f"--server URL --rejoin-token TOKEN{where}' on this node"
    )


def state_path(data_dir: Path) -> Path:
    return data_dir / STATE_FILE


def _field(raw: dict[str, Any], key: str, path: Path) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise StateError(f"{path}: {key} is missing or not a string")
    return value


def load(data_dir: Path) -> NodeState | None:
    """The saved state, or None when this node has not been enrolled."""
    path = state_path(data_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {fs.strerror(exc)}") from exc
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise StateError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise StateError(f"{path} must hold a JSON object")
    revision = raw.get("revision", 0)
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        raise StateError(f"{path}: revision must be a non-negative integer")
    architecture = _field(raw, "architecture", path)
    if architecture not in get_args(Architecture):
        raise StateError(f"{path}: architecture {architecture!r} is not amd64 or arm64")
    servers = _servers(raw, path)
    return NodeState(
        server=servers[0],
        servers=servers if len(servers) > 1 else (),
        node_name=_field(raw, "node_name", path),
        node_id=_field(raw, "node_id", path),
        credential=_field(raw, "credential", path),
        architecture=architecture,  # type: ignore[arg-type]  # checked above
        revision=revision,
    )


def _servers(raw: dict[str, Any], path: Path) -> tuple[str, ...]:
    """``servers`` when the file has it (newer agents), else ``[server]``."""
    if "servers" not in raw:
        return (_field(raw, "server", path),)
    value = raw["servers"]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in value)
    ):
        raise StateError(f"{path}: servers must be a non-empty list of http(s) URLs")
    return tuple(value)


def save(data_dir: Path, state: NodeState) -> None:
    """Create ``data_dir`` (0700) if needed and replace the state file (0600) atomically."""
    fs.make_dir(data_dir, _DIR_MODE)
    fields = {**asdict(state), "server": state.urls[0], "servers": list(state.urls)}
    data = json.dumps(fields, indent=2, sort_keys=True) + "\n"
    fs.atomic_write(state_path(data_dir), data.encode("utf-8"), _FILE_MODE)

"""The agent's enrolment state: ``{data_dir}/node.json``.

Written by ``otherix-agent bootstrap`` (enrolment) and by the daemon each time
it applies a new desired revision; read by ``otherix-agent serve`` at start.
It holds the node credential, so the file is 0600 and its directory 0700, and
every write replaces it atomically through ``otherix.agent.fs`` (a crash
leaves the old file or the new one, never half of one).

Fields: ``server`` (control-plane URL used at enrolment), ``node_name``,
``node_id``, ``credential``, ``architecture`` (what the node enrolled as; every
heartbeat repeats it) and ``revision`` (the last desired revision applied;
informational across restarts, since the pool registry starts empty anyway and
reconcile is idempotent).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final, get_args

from otherix.agent import fs
from otherix.models.nodes import Architecture

__all__ = ["STATE_FILE", "NodeState", "StateError", "load", "save", "state_path"]

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

    def with_revision(self, revision: int) -> NodeState:
        return replace(self, revision=revision)

    def __repr__(self) -> str:  # never print the credential
        return (
            f"NodeState(server={self.server!r}, node_name={self.node_name!r}, "
            f"node_id={self.node_id!r}, architecture={self.architecture!r}, "
            f"revision={self.revision})"
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
    return NodeState(
        server=_field(raw, "server", path),
        node_name=_field(raw, "node_name", path),
        node_id=_field(raw, "node_id", path),
        credential=_field(raw, "credential", path),
        architecture=architecture,  # type: ignore[arg-type]  # checked above
        revision=revision,
    )


def save(data_dir: Path, state: NodeState) -> None:
    """Create ``data_dir`` (0700) if needed and replace the state file (0600) atomically."""
    fs.make_dir(data_dir, _DIR_MODE)
    data = json.dumps(asdict(state), indent=2, sort_keys=True) + "\n"
    fs.atomic_write(state_path(data_dir), data.encode("utf-8"), _FILE_MODE)

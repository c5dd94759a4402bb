"""Enrolment: what ``otherix-agent bootstrap`` does once its flags are parsed.

Two ways in, one state file out (``otherix.agent.state``):

- **join** (``--join-token``): a new node; the control plane makes a node row
  and a credential.
- **rejoin** (``--rejoin-token``, from ``otherix node reset-credentials``): a
  node that lost or damaged its ``node.json`` comes back as itself: same node
  id, same pools, a new credential, and the old one stops working at once.
  A refused token (wrong, expired, used, another node's, a deleted node's)
  changes nothing on either side.

The state is written only after the control plane answered; before any token
is spent, :func:`check_existing` refuses to overwrite a usable enrolment
without ``--force`` and checks that the state can be written at all, so a
spent re-enrol token is not lost to a read-only data directory. Called by
``otherix.agent.main``; errors are :class:`EnrolError`, one sentence each.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from otherix.agent import state as node_state
from otherix.client.agent import AgentClient
from otherix.client.errors import ApiError, ClientError
from otherix.models.nodes import Architecture

__all__ = ["HINTS", "EnrolError", "check_existing", "enrol"]

_RESET = "make a new one with 'otherix node reset-credentials NODE'"
#: What to do next, by the ``details.reason`` of a refused join or rejoin.
HINTS = {
    "join_token_unknown": "check the token, or create one with 'otherix node join-token create'",
    "join_token_expired": "create a new one with 'otherix node join-token create'",
    "join_token_exhausted": "create a new one with 'otherix node join-token create'",
    "rejoin_token_unknown": f"check the token, or {_RESET}",
    "rejoin_token_expired": _RESET,
    "rejoin_token_used": _RESET,
    "rejoin_token_node_mismatch": "leave --node-name out, or use that node's token",
    "node_deleted": "enrol it as a new node: 'otherix node join-token create', then "
    "'otherix-agent bootstrap --join-token ...'",
}


class EnrolError(Exception):
    """Enrolment did not happen (or its state could not be kept); the message says why."""


def check_existing(data_dir: Path, *, force: bool, rejoin: bool) -> None:
    """Refuse to overwrite a usable enrolment without ``force``; a damaged one
    needs ``force`` for a join but not for a rejoin (that is what rejoin is
    for). Also refuse when the state file could not be written."""
    try:
        existing = node_state.load(data_dir)
    except node_state.StateError as exc:
        existing = None
        if not force and not rejoin:
            raise EnrolError(
                f"{exc}; use --force to enrol as a new node, or --rejoin-token to come "
                "back as this node"
            ) from exc
    if existing is not None and not force:
        raise EnrolError(
            f"already enrolled as node {existing.node_name!r} with "
            f"{', '.join(existing.urls)} ({node_state.state_path(data_dir)}); "
            "use --force to enrol again"
        )
    probe = data_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise EnrolError(f"cannot write the enrolment state under {data_dir}: {probe} is read-only")


def enrol(
    client: AgentClient,
    data_dir: Path,
    urls: Sequence[str],
    *,
    join_token: str | None,
    rejoin_token: str | None,
    node_name: str | None,
    architecture: Architecture,
) -> str:
    """Join or rejoin through ``client``, write the state; the line to print."""
    shown = ", ".join(urls)
    try:
        if rejoin_token is not None:
            joined = client.rejoin(rejoin_token, node_name, architecture)
        elif join_token is not None and node_name is not None:
            joined = client.join(join_token, node_name, architecture)
        else:
            raise EnrolError("a join token and a node name, or a re-enrol token, are needed")
    except ApiError as exc:
        hint = HINTS.get(str(exc.details.get("reason", "")))
        raise EnrolError(f"{exc.message or exc}" + (f" ({hint})" if hint else "")) from exc
    except ClientError as exc:
        raise EnrolError(f"cannot reach the control plane at {shown}: {exc}") from exc
    enrolled = node_state.NodeState(
        server=urls[0],
        servers=tuple(urls) if len(urls) > 1 else (),
        node_name=joined.name,
        node_id=joined.node_id,
        credential=joined.credential,
        architecture=architecture,
    )
    path = node_state.state_path(data_dir)
    try:
        node_state.save(data_dir, enrolled)
    except OSError as exc:
        lost = f" The new credential is lost: {_RESET}." if rejoin_token is not None else ""
        raise EnrolError(f"enrolled, but cannot write {path}: {exc}.{lost}") from exc
    if rejoin_token is not None:
        return (
            f"re-enrolled node {joined.name} ({joined.node_id}) with {shown}: new credentials "
            f"written to {path}; the old ones no longer work"
        )
    return f"enrolled node {joined.name} ({joined.node_id}) with {shown}; state written to {path}"

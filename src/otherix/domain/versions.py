"""Version skew between the control plane and its agents: the rule, with no I/O.

Called by the heartbeat service (``api/services/heartbeat.py``) for every
heartbeat (after a control-plane upgrade an agent's stored version does not
change, so checking only changed versions would let an old agent stay).

The rule, on release versions ``MAJOR.MINOR.PATCH`` (with an optional
pre-release ``aN``/``bN``/``rcN`` and ``.postN``; the patch level and the
suffixes are ignored):

- an agent of the control plane's own ``MAJOR.MINOR`` is accepted;
- an agent exactly one minor older (same major, ``MINOR - 1``) is accepted, so
  the control plane can be upgraded first and the agents one by one after;
- an older agent (two minors or more, or another major) is refused;
- a newer agent than the control plane is refused too: it may send fields the
  control plane does not understand. Upgrade the control plane first.

A version that is not a release (a ``.devN`` or ``+local`` build, or a string
that does not start with ``MAJOR.MINOR``, as test factories send, e.g. ``"t"``)
is a development build and is accepted whatever the other side is; likewise
every agent is accepted by a development control plane. Skew is an upgrade
rule for released builds; development builds are the developer's business.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_RELEASE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:(?:a|b|rc)\d+)?(?:\.post\d+)?$")


@dataclass(frozen=True, slots=True)
class Release:
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


def release(version: str) -> Release | None:
    """``MAJOR.MINOR`` of a release version; None for a development build."""
    found = _RELEASE.match(version.strip())
    if found is None:
        return None
    return Release(int(found.group(1)), int(found.group(2)))


def accepted_range(server: Release) -> tuple[Release, Release]:
    """The oldest and newest agent ``MAJOR.MINOR`` a control plane accepts."""
    oldest = Release(server.major, max(server.minor - 1, 0))
    return oldest, server


@functools.lru_cache(maxsize=64)  # called on every heartbeat, with few distinct inputs
def skew_problem(server_version: str, agent_version: str) -> str | None:
    """Why an agent of ``agent_version`` may not talk to a control plane of
    ``server_version``, with what to do; None when it may."""
    server, agent = release(server_version), release(agent_version)
    if server is None or agent is None:
        return None
    oldest, newest = accepted_range(server)
    if agent.major == server.major and oldest.minor <= agent.minor <= newest.minor:
        return None
    accepted = f"{oldest}.x" if oldest == newest else f"{oldest}.x or {newest}.x"
    if (agent.major, agent.minor) > (server.major, server.minor):
        advice = (
            f"upgrade the control plane to {agent}.x first (agents may be at most "
            "one minor version older than the control plane, never newer)"
        )
    else:
        advice = f"upgrade otherix-agent on this node to {server_version}"
    return (
        f"agent version {agent_version} is not supported by control plane "
        f"{server_version}, which accepts agents {accepted}: {advice}"
    )

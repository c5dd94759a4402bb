"""``AgentClient``: the node's calls (join, heartbeat, watch), typed."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from otherix.client.base import HttpClient
from otherix.models.heartbeat import HeartbeatReply, HeartbeatReport, WatchReply
from otherix.models.nodes import NodeJoined


class AgentClient(HttpClient):
    def join(self, join_token: str, name: str, architecture: str | None) -> NodeJoined:
        body: dict[str, Any] = {
            "join_token": join_token,
            "name": name,
            "architecture": architecture,
        }
        return NodeJoined.model_validate(self.json("POST", "/v1/nodes/join", json=body))

    def heartbeat(self, node: str, report: HeartbeatReport) -> HeartbeatReply:
        data = self.json(
            "POST",
            f"/v1/nodes/{quote(node, safe='')}/heartbeat",
            json=report.model_dump(mode="json", exclude_none=False),
        )
        return HeartbeatReply.model_validate(data)

    def watch(self, node: str, revision: int, timeout: float) -> WatchReply:
        data = self.json(
            "GET",
            f"/v1/nodes/{quote(node, safe='')}/watch",
            params={"revision": revision, "timeout": timeout},
            timeout=timeout + 15.0,
        )
        return WatchReply.model_validate(data)

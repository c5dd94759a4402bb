"""``AgentClient``: the node's calls (join, rejoin, heartbeat, watch, task reports), typed.

Heartbeats and task reports say "this is my state now": sending one twice is
harmless, so after a timeout they are resent to the next control-plane URL
(``resend_ok``). Join and rejoin are not: a second send after the first was
answered unseen would use up the token, so they never are.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from otherix.client.base import HttpClient
from otherix.models.heartbeat import HeartbeatReply, HeartbeatReport, TaskUpdate, WatchReply
from otherix.models.nodes import NodeJoined
from otherix.models.tasks import Task


class AgentClient(HttpClient):
    #: Read time a watch allows beyond its long-poll ``timeout`` for the answer to arrive.
    watch_grace: float = 15.0

    def join(self, join_token: str, name: str, architecture: str | None) -> NodeJoined:
        body: dict[str, Any] = {
            "join_token": join_token,
            "name": name,
            "architecture": architecture,
        }
        return NodeJoined.model_validate(self.json("POST", "/v1/nodes/join", json=body))

    def rejoin(self, rejoin_token: str, name: str | None, architecture: str | None) -> NodeJoined:
        """Redeem a re-enrol token: the same node, a new credential."""
        body: dict[str, Any] = {
            "rejoin_token": rejoin_token,
            "name": name,
            "architecture": architecture,
        }
        return NodeJoined.model_validate(self.json("POST", "/v1/nodes/rejoin", json=body))

    def heartbeat(self, node: str, report: HeartbeatReport) -> HeartbeatReply:
        data = self.json(
            "POST",
            f"/v1/nodes/{quote(node, safe='')}/heartbeat",
            json=report.model_dump(mode="json", exclude_none=False),
            resend_ok=True,
        )
        return HeartbeatReply.model_validate(data)

    def watch(self, node: str, revision: int, timeout: float) -> WatchReply:
        data = self.json(
            "GET",
            f"/v1/nodes/{quote(node, safe='')}/watch",
            params={"revision": revision, "timeout": timeout},
            timeout=timeout + self.watch_grace,
        )
        return WatchReply.model_validate(data)

    def update_task(self, node: str, task_id: str, update: TaskUpdate) -> Task:
        data = self.json(
            "POST",
            f"/v1/nodes/{quote(node, safe='')}/tasks/{quote(task_id, safe='')}",
            json=update.model_dump(mode="json"),
            resend_ok=True,
        )
        return Task.model_validate(data)

"""``api/views``: answers assembled by hand are what the wire model says."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from otherix.api.services.heartbeat import HeartbeatAnswer
from otherix.api.views.heartbeat import heartbeat_reply
from otherix.models.heartbeat import DesiredState, HeartbeatReply


def test_heartbeat_reply_is_a_heartbeat_reply_around_the_cached_desired_bytes() -> None:
    desired = DesiredState(revision=7, declared_pools=[], tasks=[])
    at = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    body = heartbeat_reply(HeartbeatAnswer(at, True, 30.0, desired.model_dump_json().encode()))
    reply = HeartbeatReply.model_validate_json(body)
    assert reply == HeartbeatReply(
        received_at=at, resync=True, heartbeat_interval_seconds=30.0, desired=desired
    )
    assert json.loads(body)["received_at"] == "2026-01-02T03:04:05.678000Z"
    assert list(json.loads(body)) == [
        "received_at",
        "resync",
        "heartbeat_interval_seconds",
        "desired",
    ]

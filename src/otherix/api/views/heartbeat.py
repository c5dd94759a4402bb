"""The ``HeartbeatReply`` body of ``POST /v1/nodes/{name}/heartbeat``.

The desired state is serialised once per revision (``services.heartbeat``
keeps those bytes per node), so the reply is assembled around them instead of
validating and dumping a ``HeartbeatReply`` on every heartbeat. The bytes are
a JSON object with the fields of ``HeartbeatReply``, which the agent's client
reads it as.
"""

from __future__ import annotations

import json

from otherix.api.services.heartbeat import HeartbeatAnswer


def heartbeat_reply(answer: HeartbeatAnswer) -> bytes:
    head = {
        "received_at": answer.received_at.isoformat().replace("+00:00", "Z"),
        "resync": answer.resync,
        "heartbeat_interval_seconds": answer.heartbeat_interval,
    }
    return json.dumps(head).encode()[:-1] + b', "desired": ' + answer.desired_json + b"}"

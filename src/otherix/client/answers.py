"""Client-side answer models, where an answer may carry less than its wire model says.

An ``Idempotency-Key`` replay of a create that made a secret answers the same
object with the secret replaced by ``null`` (``otherix.api.idempotency``,
``Idempotent-Replay-Withheld`` names the field): the server's
``ApiTokenCreated``/``JoinTokenCreated`` require the secret, so the client
parses those answers into these, whose ``token`` is ``None`` on a replay.
The server's wire models and the OpenAPI document are unchanged. Used by
``otherix.client.api``; the CLI tells the operator the secret was shown once.
"""

from __future__ import annotations

from otherix.models.auth import ApiToken
from otherix.models.nodes import JoinToken

__all__ = ["ApiTokenIssued", "JoinTokenIssued"]


class ApiTokenIssued(ApiToken):
    """``POST /v1/users/{user}/api-tokens``: the new token; ``token`` (the secret,
    ``otx_…``) is None on an Idempotency-Key replay."""

    token: str | None


class JoinTokenIssued(JoinToken):
    """``POST /v1/nodes/join-tokens``: the new join token; ``token`` (the secret,
    ``otxj_…``) is None on an Idempotency-Key replay."""

    token: str | None
